"""Shared fixtures: the real vectors (skipped when absent) and trust stores built from them in tmp."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "signing"
VECTORS = VECTORS.resolve()
NOTARY = VECTORS / "notary"
E2E = NOTARY / "e2e"
NGO = NOTARY / "notation-go"
COSIGN = VECTORS / "cosign" / "containers-image"
FIXED_NOW = dt.datetime(2024, 6, 18, 7, 25, tzinfo=dt.UTC)
E2E_NOW = dt.datetime(2023, 6, 26, 12, 0, tzinfo=dt.UTC)  # expired_e2e.crt valid, expiry vector passed


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"signing vectors not found at {VECTORS}")
    return VECTORS


def make_store(root: Path, stores: dict[str, list[Path]]) -> Path:
    """Build ``x509/<type>/<name>/`` under ``root`` from vector files (copies in tmp, not the repo)."""
    for spec, files in stores.items():
        stype, name = spec.split(":", 1)
        folder = root / "x509" / stype / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, folder / f.name)
    return root
