"""The Notary Project signature algorithms and their mapping to keys, JOSE names and COSE ids.

Only RSASSA-PSS (2048/3072/4096) and ECDSA (P-256/384/521) are allowed by the specification; any other
key is rejected with the reason, so a weak or unexpected key never produces or passes a signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Algorithm:
    name: str  # JOSE name, e.g. PS256
    cose_id: int
    hash_name: str  # sha256 / sha384 / sha512
    kind: str  # "rsa" or "ec"
    key_size: int  # RSA modulus bits or EC curve bits
    display: str  # notation's name, e.g. RSASSA-PSS-SHA-256

    def hash(self) -> hashes.HashAlgorithm:
        return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[self.hash_name]


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("PS256", -37, "sha256", "rsa", 2048, "RSASSA-PSS-SHA-256"),
        Algorithm("PS384", -38, "sha384", "rsa", 3072, "RSASSA-PSS-SHA-384"),
        Algorithm("PS512", -39, "sha512", "rsa", 4096, "RSASSA-PSS-SHA-512"),
        Algorithm("ES256", -7, "sha256", "ec", 256, "ECDSA-SHA-256"),
        Algorithm("ES384", -35, "sha384", "ec", 384, "ECDSA-SHA-384"),
        Algorithm("ES512", -36, "sha512", "ec", 521, "ECDSA-SHA-512"),
    )
}
BY_COSE_ID = {a.cose_id: a for a in ALGORITHMS.values()}


class UnsupportedKey(ValueError):
    """The key type or size is not allowed by the Notary Project specification."""


def algorithm_for_key(key: object) -> Algorithm:
    """Pick the one algorithm the specification assigns to this public or private key."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise UnsupportedKey(f"RSA key size {bits} bits is too weak: the minimum is {MIN_RSA_BITS}")
        for alg in ALGORITHMS.values():
            if alg.kind == "rsa" and alg.key_size == bits:
                return alg
        raise UnsupportedKey(f"RSA key size {bits} bits is not supported (use 2048, 3072 or 4096)")
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        bits = key.curve.key_size
        for alg in ALGORITHMS.values():
            if alg.kind == "ec" and alg.key_size == bits and key.curve.name.startswith("secp"):
                return alg
        raise UnsupportedKey(f"EC curve {key.curve.name} is not supported (use P-256, P-384 or P-521)")
    raise UnsupportedKey(f"key type {type(key).__name__} is not supported (use RSA or ECDSA)")


def _ec_coord_len(alg: Algorithm) -> int:
    return (alg.key_size + 7) // 8


def der_to_raw_ecdsa(der: bytes, alg: Algorithm) -> bytes:
    r, s = decode_dss_signature(der)
    n = _ec_coord_len(alg)
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def raw_to_der_ecdsa(raw: bytes, alg: Algorithm) -> bytes:
    n = _ec_coord_len(alg)
    if len(raw) != 2 * n:
        raise InvalidSignature(f"ECDSA signature is {len(raw)} bytes, expected {2 * n}")
    return encode_dss_signature(int.from_bytes(raw[:n], "big"), int.from_bytes(raw[n:], "big"))


def pss_padding(alg: Algorithm) -> padding.PSS:
    """RSASSA-PSS with MGF1 over the same hash and a salt as long as the hash (what notation uses)."""
    return padding.PSS(mgf=padding.MGF1(alg.hash()), salt_length=alg.hash().digest_size)


def verify_raw(public_key: object, alg: Algorithm, data: bytes, signature: bytes) -> None:
    """Verify a JOSE/COSE-form signature; raises ``InvalidSignature`` or ``UnsupportedKey``."""
    expected = algorithm_for_key(public_key)
    if expected.name != alg.name:
        raise UnsupportedKey(
            f"signature algorithm {alg.name} does not match the signing certificate's key ({expected.name})"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, pss_padding(alg), alg.hash())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(raw_to_der_ecdsa(signature, alg), data, ec.ECDSA(alg.hash()))
    else:  # pragma: no cover - algorithm_for_key already rejected it
        raise UnsupportedKey("unsupported key")
