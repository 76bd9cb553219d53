"""Notary Project signatures (JWS and COSE) for images and reports, trust-policy verification,
and verification of Sigstore cosign key-based signatures.

Public entry points: ``build_signature`` (pure), ``sign_artifact`` / ``verify_artifact`` (through an
``ArtifactSource``/``ArtifactTarget``), ``verify_envelope``, ``load_signer``, ``load_policy``,
``TrustStore``, ``generate_test_ca_and_leaf``. Stores: ``LayoutStore`` (OCI layouts),
``hallmark.signing.registry.RegistryStore`` (remote registries) and
``hallmark.signing.service.LocalStore`` (this server); ``hallmark.signing.service`` also has
``sign_image``/``verify_image`` for the API and the catalog's promotion gate.
"""

from hallmark.signing.artifact import (
    ArtifactSource,
    ArtifactTarget,
    ArtifactVerification,
    LayoutStore,
    sign_artifact,
    verify_artifact,
)
from hallmark.signing.certs import TrustStore
from hallmark.signing.errors import EnvelopeError, KeyLoadError, PolicyError, SigningError, VerificationError
from hallmark.signing.keys import LocalKeySigner, Signer, generate_test_ca_and_leaf, load_signer
from hallmark.signing.layout import Descriptor
from hallmark.signing.manifest import SignatureArtifact, build_signature
from hallmark.signing.policy import TrustPolicy, TrustPolicyDocument, load_policy
from hallmark.signing.verify import SignatureVerification, verify_envelope

__all__ = [
    "ArtifactSource",
    "ArtifactTarget",
    "ArtifactVerification",
    "Descriptor",
    "EnvelopeError",
    "KeyLoadError",
    "LayoutStore",
    "LocalKeySigner",
    "PolicyError",
    "SignatureArtifact",
    "SignatureVerification",
    "Signer",
    "SigningError",
    "TrustPolicy",
    "TrustPolicyDocument",
    "TrustStore",
    "VerificationError",
    "build_signature",
    "generate_test_ca_and_leaf",
    "load_policy",
    "load_signer",
    "sign_artifact",
    "verify_artifact",
    "verify_envelope",
]
