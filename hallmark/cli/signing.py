"""``hallmark key generate``, ``hallmark sign`` and ``hallmark verify``.

REF is an OCI layout (``oci:DIR[:tag|@digest]``) or a registry image (``host/repo:tag|@digest``);
both go through the same ``ArtifactSource``/``ArtifactTarget`` core.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the signing modules (cryptography, httpx) are imported by the commands that run
    from hallmark.signing.artifact import ArtifactTarget


def _parse_oci_ref(ref: str) -> tuple[str, str]:
    """``oci:DIR[:tag|@digest]`` -> (DIR, reference); the tag defaults to ``latest``."""
    body = ref[4:]
    if "@" in body:
        path, _, digest = body.rpartition("@")
        return path, digest
    path, sep, tag = body.rpartition(":")
    if sep and "/" not in tag and Path(path).is_dir():
        return path, tag
    return body, "latest"


@contextmanager
def open_target(
    ref: str, *, insecure: bool, push: bool, credentials: tuple[str, str] | None = None
) -> Iterator[tuple[ArtifactTarget, str, str]]:
    """(store, reference inside it, default registryScopes name) for a layout or registry REF."""
    from hallmark.signing.artifact import LayoutStore
    from hallmark.signing.registry import RegistryStore

    if ref.startswith("oci:"):
        path, reference = _parse_oci_ref(ref)
        yield LayoutStore(path), reference, "local/oci-layout"
        return
    store, parsed = RegistryStore.for_reference(ref, insecure=insecure, push=push, credentials=credentials)
    try:
        yield store, parsed.reference, f"{parsed.host}/{parsed.repository}"
    finally:
        store.close()


def registry_credentials(username: str | None, password_stdin: bool) -> tuple[str, str] | None:
    """Registry credentials; the password only from stdin so it never sits in argv or shell history."""
    if not username:
        return None
    password = sys.stdin.readline().rstrip("\n") if password_stdin else ""
    return username, password


INSECURE_OPTION = typer.Option("--insecure", help="Plain HTTP to the registry.")
USERNAME_OPTION = typer.Option("--username", "-u", help="Registry user (token or Basic auth).")
PASSWORD_STDIN_OPTION = typer.Option("--password-stdin", help="Read the registry password from stdin.")


def key_generate(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for leaf.key (0600), leaf.crt, ca.crt, trustpolicy.json and truststore/."),
    ],
    key_type: Annotated[str, typer.Option("--type", help="rsa or ec.")] = "rsa",
    bits: Annotated[int, typer.Option("--bits", help="RSA size: 2048, 3072 or 4096.")] = 3072,
    curve: Annotated[str, typer.Option("--curve", help="EC curve: p256, p384 or p521.")] = "p256",
    common_name: Annotated[str, typer.Option("--cn", help="Leaf common name.")] = "Hallmark Test Signer",
    store_name: Annotated[
        str, typer.Option("--store-name", help="Name of the trust store (and policy) written for the CA.")
    ] = "hallmark",
) -> None:
    """Create a test CA and a code-signing leaf that meet the Notary Project requirements, with a
    trust policy and trust store that accept what the leaf signs (for hallmark verify and notation)."""
    from hallmark.signing.errors import SigningError
    from hallmark.signing.keys import generate_test_ca_and_leaf, write_test_pki
    from hallmark.signing.trustconfig import valid_store_name, write_trust_config

    try:
        pki = generate_test_ca_and_leaf(key_type, bits, curve, common_name=common_name)
    except SigningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not valid_store_name(store_name):
        typer.echo(f"error: --store-name {store_name!r}: use letters, digits, '.', '_' or '-'", err=True)
        raise typer.Exit(2)
    paths = write_test_pki(out, pki)
    trust = write_trust_config(out, pki.ca_cert, pki.leaf_cert, store_name)
    typer.echo(f"key: {paths['key']}\nchain: {paths['chain']}\nca: {paths['ca']}")
    typer.echo(f"identity: x509.subject:{pki.leaf_cert.subject.rfc4514_string()}")
    typer.echo(f"trust policy: {trust['policy']}\ntrust store: {trust['store']} (x509/ca/{store_name}/ca.crt)")
    typer.echo(f"verify: hallmark verify REF --policy {trust['policy']} --trust-store {trust['store']}")
    typer.echo(
        f"notation: notation cert add --type ca --store {store_name} {paths['ca']} && "
        f"notation policy import {trust['policy']}"
    )


def sign(
    ref: Annotated[str, typer.Argument(help="host/repo:tag|@digest or oci:DIR[:tag]")],
    key: Annotated[Path, typer.Option("--key", help="PEM/PKCS#8 key or PKCS#12 file.")],
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM chain, signing cert first.")] = None,
    envelope: Annotated[str, typer.Option("--envelope", help="jws or cose.")] = "jws",
    expiry_days: Annotated[int | None, typer.Option("--expiry-days", help="Signature expiry.")] = None,
    insecure: Annotated[bool, INSECURE_OPTION] = False,
    username: Annotated[str | None, USERNAME_OPTION] = None,
    password_stdin: Annotated[bool, PASSWORD_STDIN_OPTION] = False,
) -> None:
    """Sign an artifact and store the signature next to it (OCI 1.1 subject manifest)."""
    from hallmark.signing.artifact import sign_artifact
    from hallmark.signing.errors import EnvelopeError, SigningError
    from hallmark.signing.keys import load_signer
    from hallmark.signing.layout import LayoutError

    try:
        signer = load_signer(key, cert)
        creds = registry_credentials(username, password_stdin)
        with open_target(ref, insecure=insecure, push=True, credentials=creds) as (target, reference, _scope):
            sig = sign_artifact(
                target,
                reference,
                signer,
                envelope,
                expiry=dt.timedelta(days=expiry_days) if expiry_days else None,
            )
    except (SigningError, EnvelopeError, LayoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"signed {ref}: signature manifest {sig.descriptor.digest} ({sig.envelope_media_type})")


def verify(
    ref: Annotated[str, typer.Argument(help="host/repo:tag|@digest or oci:DIR[:tag]")],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="trustpolicy.json (Notary format); default ./trustpolicy.json.")
    ] = None,
    trust_store: Annotated[Path, typer.Option("--trust-store", help="Folder with x509/<type>/<name>/.")] = Path(
        "truststore"
    ),
    scope: Annotated[
        str | None,
        typer.Option("--scope", help="Name matched against registryScopes (default host/repo, or local/oci-layout)."),
    ] = None,
    cosign_key: Annotated[
        Path | None, typer.Option("--cosign-key", help="Also accept cosign signatures (sha256-<hex>.sig) by this key.")
    ] = None,
    insecure: Annotated[bool, INSECURE_OPTION] = False,
    username: Annotated[str | None, USERNAME_OPTION] = None,
    password_stdin: Annotated[bool, PASSWORD_STDIN_OPTION] = False,
) -> None:
    """Verify an artifact's signatures; exit 0 only when it passes at the policy's level.

    With ``--cosign-key`` a valid cosign signature by that key also passes; without a trust policy
    file only the cosign signature is checked.
    """
    from hallmark.signing.artifact import verify_artifact
    from hallmark.signing.certs import TrustStore
    from hallmark.signing.cosign import CosignError, load_public_key, verify_cosign_signatures
    from hallmark.signing.errors import PolicyError
    from hallmark.signing.layout import LayoutError
    from hallmark.signing.policy import load_policy

    if policy is None and (Path("trustpolicy.json").is_file() or cosign_key is None):
        policy = Path("trustpolicy.json")
    passed = False
    try:
        public_key = load_public_key(cosign_key.read_bytes()) if cosign_key else None
        doc = load_policy(policy.read_bytes()) if policy else None
        creds = registry_credentials(username, password_stdin)
        with open_target(ref, insecure=insecure, push=False, credentials=creds) as (source, reference, default_scope):
            result = None
            if doc is not None:
                result = verify_artifact(
                    source, reference, doc, TrustStore(trust_store), repository=scope or default_scope
                )
            cosign = []
            if public_key is not None:
                subject = result.subject if result and result.subject else source.resolve(reference)
                cosign = verify_cosign_signatures(source, subject.digest, public_key)
    except (PolicyError, LayoutError, CosignError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if result is not None:
        for sig in result.signatures:
            for warning in sig.warnings:
                typer.echo(f"warning: {warning}", err=True)
        if not result.passed:
            typer.echo(f"error: signature verification failed: {result.error}", err=True)
        elif result.level == "skip":
            passed = True
            typer.echo(f"trust policy {result.policy!r} is configured to skip signature verification for {ref}")
        else:
            passed = True
            verified = result.verified
            typer.echo(
                f"verified {ref} ({result.subject.digest if result.subject else ''}) at level {result.level}: "
                f"signature {verified.signature_manifest if verified else ''}"
            )
    if public_key is not None:
        if not cosign:
            typer.echo(f"error: no cosign signature found for {ref}", err=True)
        for c in cosign:
            if c.passed:
                passed = True
                typer.echo(f"verified cosign signature of {ref} ({c.signature_manifest})")
            else:
                typer.echo(f"error: cosign signature {c.signature_manifest}: {c.error}", err=True)
    if not passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    key_app = typer.Typer(no_args_is_help=True, help="Signing keys.")
    key_app.command("generate")(key_generate)
    app.add_typer(key_app, name="key")
    app.command("sign")(sign)
    app.command("verify")(verify)
