"""Advisory import and re-matching cost on the full real snapshot (issue 4 targets).

    python -m bench.advisories                 # import + 1,000 x ~300-package re-match
    python -m bench.advisories --images 200    # smaller run
    python -m bench.advisories --no-server     # skip the rematch_all (server path) part

(a) Import: ``hallmark.advisories.index.load_snapshot`` on ``../shared/data`` (the production
code path) -- target < 60 s.
(b) Re-match: 1,000 stored inventories of ~300 packages each against the full snapshot -- target
< 10 s on 2 cores. Inventories are built from the snapshot itself with a fixed seed: Debian 11
source packages named by the DSA/DLA/OSV-Debian data at versions just below, at and above their
fixed versions, Debian packages of a real bookworm minbase (bench/.cache, if built by
bench/sbom.py) that mostly have no advisory, and PyPI / npm / Go (modules + stdlib) / crates.io
packages with real names at versions from the records' ``versions`` lists and around their
fix boundaries, plus the venv's own PyPI distributions (mostly clean). Measured twice:
``match_inventory`` alone (single process and the process pool ``rematch_all`` uses), and the
server path ``hallmark.pipeline.matching.rematch_all`` on a real data folder (SQLite metadata,
filesystem blobs, advisory set imported with ``advisory_sets.update`` from the snapshot): first run
writes and attaches 1,000 reports, second run is the steady state after an advisory update
that changes nothing for most images.

No peer: no installable tool re-matches stored inventories (Trivy, Grype and Clair re-scan
images or SBOMs one at a time, and Trivy 0.59.1 cannot run a vulnerability scan offline here
without its vulnerability DB, which cannot be downloaded in this environment), so only
Hallmark's figures are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from hallmark.advisories.index import AdvisoryIndex, load_snapshot
from hallmark.advisories.matcher import match_inventory
from hallmark.model import Distro, Package

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("HALLMARK_BENCH_DATA", ROOT.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
MINBASE_STATUS = ROOT / "bench" / ".cache" / "rootfs" / "var" / "lib" / "dpkg" / "status"
SEED = 20261125
DEBIAN11 = Distro(id="debian", version_id="11", codename="bullseye")

Inventory = tuple[Distro, list[Package]]

#: Popular PyPI distributions at recent releases (mostly no advisory): the "clean" part of an image.
COMMON_PYPI = [
    tuple(x.split("=="))
    for x in (
        "aiohttp==3.9.5 aiosignal==1.3.1 annotated-types==0.7.0 anyio==4.4.0 attrs==23.2.0 boto3==1.34.144 "
        "botocore==1.34.144 certifi==2024.7.4 cffi==1.16.0 charset-normalizer==3.3.2 click==8.1.7 "
        "cryptography==42.0.8 distro==1.9.0 fastapi==0.111.1 filelock==3.15.4 frozenlist==1.4.1 fsspec==2024.6.1 "
        "gunicorn==22.0.0 h11==0.14.0 httpcore==1.0.5 httpx==0.27.0 idna==3.7 importlib-metadata==8.0.0 "
        "itsdangerous==2.2.0 jinja2==3.1.4 jmespath==1.0.1 markupsafe==2.1.5 multidict==6.0.5 numpy==2.0.0 "
        "packaging==24.1 pandas==2.2.2 pip==24.1.2 platformdirs==4.2.2 pluggy==1.5.0 protobuf==5.27.2 "
        "psycopg2-binary==2.9.9 pyasn1==0.6.0 pycparser==2.22 pydantic==2.8.2 pydantic-core==2.20.1 "
        "pyjwt==2.8.0 python-dateutil==2.9.0.post0 pytz==2024.1 pyyaml==6.0.1 redis==5.0.7 requests==2.32.3 "
        "rsa==4.9 s3transfer==0.10.2 setuptools==70.3.0 six==1.16.0 sniffio==1.3.1 sqlalchemy==2.0.31 "
        "starlette==0.37.2 typing-extensions==4.12.2 tzdata==2024.1 urllib3==2.2.2 uvicorn==0.30.1 "
        "werkzeug==3.0.3 wheel==0.43.0 yarl==1.9.4 zipp==3.19.2"
    ).split()
]


# --------------------------------------------------------------------------- inventories


def _bump(version: str, delta: int) -> str | None:
    """The version with its last number moved by ``delta`` (None when it would go negative)."""
    m = list(re.finditer(r"\d+", version))
    if not m:
        return None
    last = m[-1]
    n = int(last.group()) + delta
    if n < 0:
        return None
    return version[: last.start()] + str(n) + version[last.end() :]


def _debian_variants(fixed: str) -> list[str]:
    """Versions around a Debian fixed version: just below (``~``), at, just above (binNMU)."""
    return [fixed + "~pre1", fixed, fixed + "+b1"]


def _lang_variants(fixed: str) -> list[str]:
    out = [fixed]
    for d in (-1, 1):
        v = _bump(fixed, d)
        if v:
            out.append(v)
    return out


def _fixed_versions(idx: AdvisoryIndex, key: tuple[str, str]) -> list[str]:
    out: list[str] = []
    for entry in idx.by_package[key]:
        out.extend(entry.fixed_versions())
    return sorted(set(out))


def _listed_versions(idx: AdvisoryIndex, key: tuple[str, str]) -> list[str]:
    out: set[str] = set()
    for entry in idx.by_package[key]:
        out.update(entry.versions)
    return sorted(out)


def _minbase_packages() -> list[tuple[str, str, str, str]]:
    """(binary, version, source, source version) of a real bookworm minbase, if bench/sbom.py built it."""
    if not MINBASE_STATUS.exists():
        return []
    out = []
    for para in MINBASE_STATUS.read_text().split("\n\n"):
        fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+): (.*)$", para, re.M))  # field -> value
        if "Package" not in fields or "Version" not in fields:
            continue
        src = fields.get("Source", fields["Package"])
        m = re.match(r"(\S+)(?: \((.+)\))?", src)
        assert m
        out.append((fields["Package"], fields["Version"], m.group(1), m.group(2) or fields["Version"]))
    return out


def build_pools(idx: AdvisoryIndex) -> dict[str, list[tuple[str, list[str]]]]:
    """Per kind: (name, candidate versions) drawn from the snapshot itself."""
    pools: dict[str, list[tuple[str, list[str]]]] = {k: [] for k in ("deb", "pypi", "npm", "go", "crates")}
    eco_kind = {"Debian:11": "deb", "PyPI": "pypi", "npm": "npm", "Go": "go", "crates.io": "crates"}
    for key in sorted(idx.by_package):
        kind = eco_kind.get(key[0])
        if kind is None:
            continue
        fixed = _fixed_versions(idx, key)
        if kind == "deb":
            versions = [v for f in fixed for v in _debian_variants(f)]
        else:
            versions = [v for f in fixed for v in _lang_variants(f)] + _listed_versions(idx, key)[-6:]
            if kind == "go":
                versions = [v if key[1] in ("stdlib", "toolchain") else "v" + v.removeprefix("v") for v in versions]
        if versions:
            pools[kind].append((key[1], sorted(set(versions))))
    return pools


def build_inventories(idx: AdvisoryIndex, count: int, size: int = 300, seed: int = SEED) -> list[Inventory]:
    """``count`` inventories of ``size`` packages (see the module docstring)."""
    rng = random.Random(seed)
    pools = build_pools(idx)
    minbase = _minbase_packages()
    venv = COMMON_PYPI
    # share of each kind in one image (sums to 1)
    mix = {"deb": 0.30, "minbase": 0.20, "pypi": 0.15, "venv": 0.10, "npm": 0.08, "go": 0.10, "crates": 0.07}
    out: list[Inventory] = []
    for i in range(count):
        pkgs: list[Package] = []
        layer = f"sha256:{i:064x}"
        for kind, share in mix.items():
            n = round(size * share)
            if kind == "minbase":
                for b, v, s, sv in rng.sample(minbase, min(n, len(minbase))):
                    pkgs.append(Package(b, v, "Debian", f"pkg:deb/debian/{b}@{v}", s, sv, layer=layer, type="os"))
                continue
            if kind == "venv":
                for name, v in rng.sample(venv, min(n, len(venv))):
                    pkgs.append(Package(name, v, "PyPI", f"pkg:pypi/{name.lower()}@{v}", layer=layer))
                continue
            for name, versions in rng.sample(pools[kind], min(n, len(pools[kind]))):
                v = rng.choice(versions)
                if kind == "deb":
                    binary = f"lib{name}" if rng.random() < 0.3 else name
                    pkgs.append(Package(binary, v, "Debian", None, name, v, layer=layer, type="os"))
                else:
                    eco = {"pypi": "PyPI", "npm": "npm", "go": "Go", "crates": "crates.io"}[kind]
                    pkgs.append(Package(name, v, eco, layer=layer))
        out.append((DEBIAN11, pkgs))
    return out


# --------------------------------------------------------------------------- measurements


def bench_import() -> tuple[AdvisoryIndex, float]:
    start = time.perf_counter()
    idx = load_snapshot(DATA)
    return idx, time.perf_counter() - start


def bench_match(idx: AdvisoryIndex, inventories: list[Inventory]) -> tuple[float, int]:
    idx.key_cache.clear()  # cold caches, as after a fresh import
    idx.match_cache.clear()
    start = time.perf_counter()
    findings = 0
    for distro, pkgs in inventories:
        findings += len(match_inventory(idx, pkgs, distro).findings)
    return time.perf_counter() - start, findings


_POOL: tuple[AdvisoryIndex, list[Inventory], int] | None = None  # inherited by forked workers


def _match_chunk(part: int) -> int:
    assert _POOL is not None
    idx, invs, step = _POOL
    return sum(len(match_inventory(idx, pkgs, distro).findings) for distro, pkgs in invs[part::step])


def bench_match_pool(idx: AdvisoryIndex, inventories: list[Inventory], workers: int) -> tuple[float, int]:
    """match_inventory over a fork pool: children share the loaded index copy-on-write."""
    import multiprocessing

    global _POOL
    idx.key_cache.clear()
    idx.match_cache.clear()
    _POOL = (idx, inventories, workers)  # nothing is pickled but the part number and a count
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        findings = sum(pool.map(_match_chunk, range(workers)))
    return time.perf_counter() - start, findings


def bench_server(inventories: list[Inventory]) -> list[tuple[str, float, dict[str, int]]]:
    """rematch_all on a real data folder: import the snapshot, store inventories, re-match twice."""
    import orjson

    from hallmark.app import Hallmark
    from hallmark.config import Config
    from hallmark.index import INDEXER_VERSION, IndexResult
    from hallmark.pipeline import advisory_sets
    from hallmark.pipeline.matching import rematch_all
    from hallmark.registry.service import push_manifest_sync

    tmp = Path(tempfile.mkdtemp(prefix="hallmark-bench-"))
    try:
        config = Config(data_dir=str(tmp))
        hm = Hallmark.open(config)
        p = hm.pipeline
        t = time.perf_counter()
        advisory_sets.update(p, mirror=str(DATA))
        print(f"  server: `db update --mirror` (copy, check, import, activate): {time.perf_counter() - t:.1f}s")
        # the rematch job that update() queues is not run; rematch_all is called directly below
        t = time.perf_counter()
        repo = "bench/rematch"
        for i, (distro, pkgs) in enumerate(inventories):
            cfg = orjson.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "config": {"Labels": {"n": str(i)}},
                }
            )
            cdig, size = hm.blobs.put(cfg)
            hm.meta.link_blob(repo, cdig, size)
            manifest = orjson.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": size},
                    "layers": [],
                }
            )
            digest = push_manifest_sync(hm.registry, repo, manifest, "application/vnd.oci.image.manifest.v1+json")
            inv = IndexResult(status="done", image_digest=digest, distro=distro, packages=pkgs)
            p.cache.put("image", INDEXER_VERSION, digest, inv.to_json())
            p.store.set_image(
                repo,
                digest,
                status="indexed",
                indexer_version=INDEXER_VERSION,
                distro=distro.__dict__,
                package_count=len(pkgs),
            )
        print(f"  server: stored {len(inventories)} images + inventories in {time.perf_counter() - t:.1f}s")
        from hallmark.pipeline.matching import active_index

        t = time.perf_counter()
        active_index(p)  # the server loads the active set once per process (that is import, target (a))
        print(f"  server: active advisory set loaded in {time.perf_counter() - t:.1f}s (not part of re-matching)")
        runs = []
        for label in ("first (writes + attaches every report)", "second (nothing changed)"):
            t = time.perf_counter()
            stats = rematch_all(p)
            runs.append((label, time.perf_counter() - t, stats))
        hm.close()
        return runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--packages", type=int, default=300)
    parser.add_argument("--no-server", action="store_true", help="skip rematch_all on a real data folder")
    args = parser.parse_args(argv)
    print(f"snapshot: {DATA}; cores: {os.cpu_count()}")
    idx, secs = bench_import()
    status = "OK" if secs < 60 else "MISSED"
    print(
        f"(a) import full snapshot (load_snapshot): {secs:.1f}s, {len(idx.advisories)} advisories, "
        f"{sum(len(v) for v in idx.by_package.values())} affected entries  [target < 60 s: {status}]"
    )
    t = time.perf_counter()
    invs = build_inventories(idx, args.images, args.packages)
    npk = sum(len(p) for _, p in invs)
    print(
        f"inventories: {len(invs)} x ~{npk // len(invs)} packages built in {time.perf_counter() - t:.1f}s (seed {SEED})"
    )
    secs, findings = bench_match(idx, invs)
    print(
        f"(b) match_inventory, one process: {secs:.2f}s for {len(invs)} inventories "
        f"({npk / secs:,.0f} packages/s, {findings} findings)"
    )
    workers = min(2, os.cpu_count() or 1)
    secs, findings = bench_match_pool(idx, invs, workers)
    status = "OK" if secs < 10 else "MISSED"
    print(
        f"(b) match_inventory, fork pool of {workers} (pool start included): {secs:.2f}s "
        f"({npk / secs:,.0f} packages/s, {findings} findings)  [target < 10 s: {status}]"
    )
    if not args.no_server:
        for label, secs, stats in bench_server(invs):
            status = "OK" if secs < 10 else "MISSED"
            print(f"(b) rematch_all (server path), {label}: {secs:.2f}s, {stats}  [target < 10 s: {status}]")
    print(
        "peer: none -- no installable tool re-matches stored inventories; Trivy 0.59.1 needs its vulnerability DB,"
        " which cannot be downloaded here, so it is not measured"
    )


if __name__ == "__main__":
    main()
