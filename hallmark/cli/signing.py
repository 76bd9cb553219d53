"""``hallmark key generate``, ``hallmark sign`` and ``hallmark verify`` for OCI layouts (``oci:DIR[:tag]``).

Registry references are wired later through the same ``ArtifactSource``/``ArtifactTarget`` core.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from hallmark.signing.artifact import LayoutStore, sign_artifact, verify_artifact
from hallmark.signing.certs import TrustStore
from hallmark.signing.errors import EnvelopeError, PolicyError, SigningError
from hallmark.signing.keys import generate_test_ca_and_leaf, load_signer, write_test_pki
from hallmark.signing.layout import LayoutError
from hallmark.signing.policy import load_policy


def _parse_oci_ref(ref: str) -> tuple[str, str]:
    """``oci:DIR[:tag|@digest]`` -> (DIR, reference); the tag defaults to ``latest``."""
    if not ref.startswith("oci:"):
        typer.echo(f"error: {ref!r}: only oci:DIR[:tag] references are supported for now", err=True)
        raise typer.Exit(2)
    body = ref[4:]
    if "@" in body:
        path, _, digest = body.rpartition("@")
        return path, digest
    path, sep, tag = body.rpartition(":")
    if sep and "/" not in tag and Path(path).is_dir():
        return path, tag
    return body, "latest"


def key_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for leaf.key (0600), leaf.crt and ca.crt.")],
    key_type: Annotated[str, typer.Option("--type", help="rsa or ec.")] = "rsa",
    bits: Annotated[int, typer.Option("--bits", help="RSA size: 2048, 3072 or 4096.")] = 3072,
    curve: Annotated[str, typer.Option("--curve", help="EC curve: p256, p384 or p521.")] = "p256",
    common_name: Annotated[str, typer.Option("--cn", help="Leaf common name.")] = "Hallmark Test Signer",
) -> None:
    """Create a test CA and a code-signing leaf that meet the Notary Project requirements."""
    try:
        pki = generate_test_ca_and_leaf(key_type, bits, curve, common_name=common_name)
    except SigningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    paths = write_test_pki(out, pki)
    typer.echo(f"key: {paths['key']}\nchain: {paths['chain']}\nca: {paths['ca']}")
    typer.echo(f"identity: x509.subject:{pki.leaf_cert.subject.rfc4514_string()}")


def sign(
    ref: Annotated[str, typer.Argument(help="oci:DIR[:tag]")],
    key: Annotated[Path, typer.Option("--key", help="PEM/PKCS#8 key or PKCS#12 file.")],
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM chain, signing cert first.")] = None,
    envelope: Annotated[str, typer.Option("--envelope", help="jws or cose.")] = "jws",
    expiry_days: Annotated[int | None, typer.Option("--expiry-days", help="Signature expiry.")] = None,
) -> None:
    """Sign an artifact and store the signature next to it (OCI 1.1 subject manifest)."""
    path, reference = _parse_oci_ref(ref)
    try:
        signer = load_signer(key, cert)
        target = LayoutStore(path)
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
    ref: Annotated[str, typer.Argument(help="oci:DIR[:tag]")],
    policy: Annotated[Path, typer.Option("--policy", help="trustpolicy.json (Notary format).")] = Path(
        "trustpolicy.json"
    ),
    trust_store: Annotated[Path, typer.Option("--trust-store", help="Folder with x509/<type>/<name>/.")] = Path(
        "truststore"
    ),
    scope: Annotated[
        str, typer.Option("--scope", help="Repository name matched against registryScopes.")
    ] = "local/oci-layout",
) -> None:
    """Verify an artifact's signatures; exit 0 only when it passes at the policy's level."""
    path, reference = _parse_oci_ref(ref)
    try:
        doc = load_policy(policy.read_bytes())
        result = verify_artifact(LayoutStore(path), reference, doc, TrustStore(trust_store), repository=scope)
    except (PolicyError, LayoutError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for sig in result.signatures:
        for warning in sig.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if not result.passed:
        typer.echo(f"error: signature verification failed: {result.error}", err=True)
        raise typer.Exit(1)
    if result.level == "skip":
        typer.echo(f"trust policy {result.policy!r} is configured to skip signature verification for {ref}")
        return
    verified = result.verified
    typer.echo(
        f"verified {ref} ({result.subject.digest if result.subject else ''}) at level {result.level}: "
        f"signature {verified.signature_manifest if verified else ''}"
    )


def register(app: typer.Typer) -> None:
    key_app = typer.Typer(no_args_is_help=True, help="Signing keys.")
    key_app.command("generate")(key_generate)
    app.add_typer(key_app, name="key")
    app.command("sign")(sign)
    app.command("verify")(verify)
