"""Wall time and peak RSS of ``hallmark sbom`` vs ``trivy image --format cyclonedx``, and of
``hallmark scan`` (vulnerabilities only, and all scanners), on the same images in one run.

    python -m bench.scan_speed [--runs 3]

Images: bench/sbom.py's fixture (bookworm minbase + PyPI, npm, Go, jars; 3 layers) and a
``debootstrap --variant=minbase bullseye`` image (Debian 11, which the shared advisory data
covers). The advisory set is the whole shared snapshot, imported once with
``hallmark db update --mirror ../shared/data`` into bench/.cache/scan-data (the compiled index
and the YARA cache are built by the first scan, as on a user's machine; the runs reported
are the ones after it). ``scan`` is measured twice: "cached", after an earlier scan of the
image (index and content-check results per layer in ~/.cache/hallmark, as for the second
scan of an image or of an image sharing its layers), and "uncached", with those caches
emptied before every run (a first scan of new layers: every file read through YARA and the
secret rules, in worker processes beside the indexer). Each command runs in its own
process; CPU time (the command and its workers) comes from wait4, memory is the peak of the
process tree's summed PSS (see ``measure``). The median of ``--runs`` runs is reported with
the spread (min-max) and the load average before each row; memory comes from one more run (sampling it costs CPU, so
the timed runs go unsampled). Hallmark's modules are byte-compiled first, as an install leaves
them. Trivy 0.59.1 runs offline with its
cache disabled (``--cache-backend memory``), as in bench/sbom.py: its SBOM, and its secret
scanner (the one content check both tools have; one run, it takes minutes) on the same images.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.sbom import CACHE, LAYOUT, TAG, TRIVY, build_fixture, sh, trivy_cache

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
BULLSEYE = CACHE / "layout-bullseye"
DATA = CACHE / "scan-data"
XDG = CACHE / "xdg-cache"


def build_bullseye() -> None:
    """A one-layer Debian 11 minbase image (cached)."""
    if (BULLSEYE / "index.json").exists():
        return
    rootfs = CACHE / "rootfs-bullseye"
    if not (rootfs / "var/lib/dpkg/status").exists():
        sh("debootstrap", "--variant=minbase", "bullseye", str(rootfs), "http://deb.debian.org/debian")
    bundle = CACHE / "bundle-bullseye"
    shutil.rmtree(bundle, ignore_errors=True)
    sh("umoci", "init", "--layout", str(BULLSEYE))
    sh("umoci", "new", "--image", f"{BULLSEYE}:{TAG}")
    sh("umoci", "unpack", "--image", f"{BULLSEYE}:{TAG}", str(bundle))
    sh("cp", "-a", f"{rootfs}/.", str(bundle / "rootfs"))
    sh("umoci", "repack", "--image", f"{BULLSEYE}:{TAG}", str(bundle))
    shutil.rmtree(bundle, ignore_errors=True)


def env() -> dict[str, str]:
    return {**os.environ, "HALLMARK_DATA_DIR": str(DATA), "XDG_CACHE_HOME": str(XDG)}


def import_advisories() -> None:
    if list((DATA / "advisories").glob("*/compiled.sqlite")):
        return
    cmd = [sys.executable, "-m", "hallmark", "db", "update", "--mirror", str(SHARED)]
    subprocess.run(cmd, env=env(), check=True, capture_output=True)


UNCACHED = "uncached"


def clear_layer_caches() -> None:
    """Forget every cached layer result (the compiled YARA rules stay, as after any first scan)."""
    for name in ("content", "index"):
        shutil.rmtree(XDG / "hallmark" / name, ignore_errors=True)


def commands(layout: Path) -> dict[str, list[str]]:
    hm = [sys.executable, "-m", "hallmark"]
    ref = f"oci:{layout}:{TAG}"
    trivy = [str(TRIVY), "image", "--input", str(layout), "--format", "cyclonedx", "--cache-backend", "memory"]
    trivy += ["--cache-dir", str(trivy_cache()), "--skip-db-update", "--skip-java-db-update", "--offline-scan", "-q"]
    return {
        "trivy image --format cyclonedx": trivy,
        "trivy image --scanners secret (uncached)": [
            *(a if a != "cyclonedx" else "json" for a in trivy),
            "--scanners",
            "secret",
        ],
        "hallmark sbom --format cyclonedx": [*hm, "sbom", ref, "--format", "cyclonedx"],
        "hallmark scan --scanners vuln (cached)": [*hm, "scan", ref, "--format", "json", "--scanners", "vuln"],
        "hallmark scan --scanners vuln (uncached)": [*hm, "scan", ref, "--format", "json", "--scanners", "vuln"],
        "hallmark scan, all scanners (cached)": [*hm, "scan", ref, "--format", "json"],
        "hallmark scan, all scanners (uncached)": [*hm, "scan", ref, "--format", "json"],
    }


def _tree_rss(pid: int) -> int:
    """Memory of ``pid`` and all its descendants now (PSS; 0 once it is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:  # proportional set size: pages shared after fork are counted once, not per process
            with open(f"/proc/{p}/smaps_rollup", "rb") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith(b"Pss:"))
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return total


def measure(cmd: list[str], sample: bool = True) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, the command and its worker processes) and
    peak RSS (MiB) of one run of ``cmd``. CPU time is given because the machine is shared:
    wall time grows with other people's load. Memory is the larger of the process's own peak
    RSS (``wait4``) and, with ``sample``, the peak of its process tree's summed PSS, sampled
    every 50 ms (hallmark scan's content-check workers are separate processes: their memory
    counts too; pages they share with their parent after fork count once). Sampling costs CPU
    (a /proc walk and ``smaps_rollup`` of each process, which also holds the process's memory
    lock), so :func:`run` times runs without it and samples memory in a run of its own."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    peak = 0
    while True:
        if not sample:
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    # wait4's usage covers the process and the children it waited for (the workers)
    return wall, usage.ru_utime + usage.ru_stime, max(peak / 1024 / 1024, usage.ru_maxrss / 1024)


def run(cmd: list[str], runs: int, cold: bool = False, warm_up: bool = True) -> list[tuple[float, float, float]]:
    """Wall seconds, CPU seconds and peak memory (MiB) of ``runs`` runs after one warm-up;
    ``cold``: the per-layer caches are emptied before each run."""
    if runs == 1 and not warm_up:  # Trivy's minute-long secret scan: one sampled run
        return [measure(cmd)]
    if warm_up:
        measure(cmd, sample=False)  # page cache, compiled index / YARA cache on first use
    results = []
    for _ in range(runs):
        if cold:
            clear_layer_caches()
        results.append(measure(cmd, sample=False))
    if cold:
        clear_layer_caches()
    memory = measure(cmd)[2]  # one more run, for memory only
    return [(wall, cpu, memory) for wall, cpu, _ in results]


def row(results: list[tuple[float, float, float]]) -> str:
    """``median (min-max)`` of each column."""
    cols = list(zip(*results, strict=True))
    cells = []
    for col, unit, fmt in zip(cols, ("s", "s", "MiB"), ("{:.2f}", "{:.2f}", "{:.0f}"), strict=True):
        med = fmt.format(statistics.median(col))
        cells.append(
            f"{med} {unit}" if len(col) == 1 else f"{med} {unit} ({fmt.format(min(col))}-{fmt.format(max(col))})"
        )
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    build_fixture()
    build_bullseye()
    import_advisories()
    # Hallmark's bytecode, as an install writes it: with PYTHONDONTWRITEBYTECODE set (some CI
    # machines set it), every run would otherwise compile ~80 modules first (~0.1 s).
    compileall.compile_dir(ROOT / "hallmark", quiet=1)
    images = {"bookworm + languages (bench/sbom.py)": LAYOUT, "bullseye minbase": BULLSEYE}
    help_runs = run([sys.executable, "-m", "hallmark", "--help"], args.runs)
    print(f"hallmark --help: {row(help_runs)}; load average {os.getloadavg()[0]:.1f}")
    print("\n| image | command | wall, median (min-max) | CPU user+sys | peak memory | load |")
    print("|---|---|---|---|---|---|")
    # Trivy's minute-long secret scans come last: after a minute of both cores busy this VM ran
    # the next commands ~15 % slower (CPU time too), which would tax whichever row came next.
    slow = []
    for label, layout in images.items():
        for name, cmd in commands(layout).items():
            if "--scanners secret" in name and name.startswith("trivy"):
                slow.append((label, name, cmd))
                continue
            load = os.getloadavg()[0]
            results = run(cmd, args.runs, cold=UNCACHED in name)
            print(f"| {label} | `{name}` | {row(results)} | {load:.1f} |", flush=True)
    for label, name, cmd in slow:
        load = os.getloadavg()[0]
        print(f"| {label} | `{name}` | {row(run(cmd, 1, warm_up=False))} | {load:.1f} |", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
