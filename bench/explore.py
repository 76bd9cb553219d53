"""Explore query cost over a synthetic code-to-cloud graph (issue 13 target: < 1 s).

    python -m bench.explore                          # 10,000 images, 50,000 workloads, 1,000,000 findings
    python -m bench.explore --seed 7 --backend sqlite
    python -m bench.explore --images 1000 --workloads 5000 --findings 100000   # smaller run

The generator (seeded; the seed is printed) writes straight into a migrated database, SQLite
(the embedded default) and a throw-away PostgreSQL started like tests/conftest.py does:

* 10,000 images in 500 repositories, graded A-F; 1,000,000 findings spread with a long tail
  (a few images carry thousands, most a few dozen) over 60,000 advisories drawn Zipf-like (a
  popular CVE is in thousands of images); severity per advisory: 2 % critical, 13 % high, 40 %
  medium, 30 % low, 15 % unrated; KEV on 1 % of critical/high advisories; a fix for 70 % of
  findings; 1 % VEX-suppressed; 8,000 DSA-style ids with one to three CVE aliases;
* provenance: an annotation row per image, signed SLSA (verified) for 30 %, from 300 source
  repositories; an owner team (of 50) for 30 % of images;
* 20 clusters, 200 namespaces, 50,000 workloads (10 % exposed, with an ingress path), one
  to three containers each; popular images run in many workloads; 5 % of containers run a
  digest Hallmark does not hold; every 5th image is listed by an image index (with a second,
  unscanned platform) and containers running it report the index digest, as a pull by tag of
  a multi-platform image does; 5 blob references per image in ``manifest_refs``.

Timed through ``hallmark.explore.query.explore`` (what the API and CLI call), best and worst
of 5 warm runs after one cold run, for the first page (100 rows) and for every row (paging
with 1,000-row pages).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Table, text

from hallmark.catalog.tables import catalog_entries
from hallmark.explore.filters import parse_filters
from hallmark.explore.query import explore
from hallmark.inventory.tables import clusters, workload_images, workloads
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.metadata.tables import manifest_refs, repositories
from hallmark.pipeline.tables import advisory_aliases, image_findings, images
from hallmark.provenance.tables import provenance

SEED = 20261205
SEVERITIES = [("critical", 4, 0.02), ("high", 3, 0.13), ("medium", 2, 0.40), ("low", 1, 0.30), ("unknown", 0, 0.15)]


def _hex(rng: random.Random) -> str:
    return f"sha256:{rng.getrandbits(256):064x}"


class Graph:
    """The generated rows, per table, as tuples in column order."""

    def __init__(self, seed: int, n_images: int, n_workloads: int, n_findings: int) -> None:
        rng = random.Random(seed)
        now = utcnow()
        self.rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        repos = [f"team{i % 50}/app{i}" for i in range(max(1, n_images // 20))]
        sources = [f"https://github.com/acme/service-{i}" for i in range(300)]
        teams = [f"team-{i}" for i in range(50)]
        self.images = [(rng.choice(repos), _hex(rng)) for _ in range(n_images)]
        grades = "ABCDEF"
        self.rows["images"] = (
            ["repo_name", "digest", "status", "grade", "updated_at"],
            [(r, d, "done", rng.choice(grades), now) for r, d in self.images],
        )
        # advisories: severity per advisory, Zipf-like popularity
        n_adv = max(100, n_findings // 16)
        advs: list[tuple[str, str, int, bool]] = []
        aliases: list[tuple[str, str]] = []
        for i in range(n_adv):
            x, acc = rng.random(), 0.0
            sev, rank = "unknown", 0
            for s, r, p in SEVERITIES:
                acc += p
                if x < acc:
                    sev, rank = s, r
                    break
            if i % 7 == 0:
                adv = f"DSA-{5000 + i}-1"
                for k in range(rng.randint(1, 3)):
                    aliases.append((f"CVE-{2015 + i % 10}-{20000 + i * 3 + k}", adv))
            else:
                adv = f"CVE-{2015 + i % 10}-{10000 + i}"
            advs.append((adv, sev, rank, rank >= 3 and rng.random() < 0.01))
        self.popular_cve = next(a for a, _ in aliases)  # an alias of the most popular DSA
        self.rows["advisory_aliases"] = (["alias", "advisory_id"], aliases)
        weights = [1.0 / (i + 1) ** 0.9 for i in range(n_adv)]
        packages = [f"pkg{i}" for i in range(3000)]
        # findings per image: long tail (Pareto), scaled to the requested total
        raw = [rng.paretovariate(1.5) for _ in self.images]
        scale = n_findings / sum(raw)
        counts = [max(1, int(r * scale)) for r in raw]
        counts[0] += n_findings - sum(counts)
        if counts[0] < 1:
            counts = [max(1, c) for c in counts]
        findings = []
        chosen = rng.choices(range(n_adv), weights=weights, k=sum(counts))
        pos = 0
        for (repo, digest), n in zip(self.images, counts, strict=True):
            for a in chosen[pos : pos + n]:
                adv, sev, rank, kev = advs[a]
                findings.append(
                    (
                        repo,
                        digest,
                        adv,
                        packages[a % 3000],
                        f"1.{a % 40}.{a % 7}-1",
                        "Debian:12",
                        None,
                        sev,
                        rank,
                        kev,
                        rng.random() < 0.7,
                        rng.random() < 0.01,
                    )
                )
            pos += n
        self.rows["image_findings"] = (
            [
                "repo_name",
                "digest",
                "advisory_id",
                "package",
                "version",
                "ecosystem",
                "purl",
                "severity",
                "severity_rank",
                "kev",
                "fix_available",
                "suppressed",
            ],
            findings,
        )
        prov: list[tuple[Any, ...]] = []
        for repo, digest in self.images:
            src = rng.choice(sources)
            commit = f"{rng.getrandbits(160):040x}"
            prov.append((digest, repo, "annotation", "manifest", None, src, commit, None, None, None, None, "{}", now))
            if rng.random() < 0.3:
                run = str(rng.randint(1, 10**6))
                prov.append(
                    (
                        digest,
                        repo,
                        "slsa",
                        _hex(rng),
                        True,
                        src,
                        commit,
                        "release",
                        run,
                        f"{src}/actions/runs/{run}",
                        "https://github.com/actions/runner",
                        "{}",
                        now,
                    )
                )
        self.rows["provenance"] = (
            [
                "digest",
                "repo_name",
                "kind",
                "origin",
                "verified",
                "source_repo",
                "revision",
                "pipeline",
                "run_id",
                "run_url",
                "builder_id",
                "facts",
                "created_at",
            ],
            prov,
        )
        self.source = sources[0]
        self.rows["catalog_entries"] = (
            ["repo_name", "digest", "stage", "owner", "owner_kind", "updated_at"],
            [(r, d, "approved", rng.choice(teams), "team", now) for r, d in self.images if rng.random() < 0.3],
        )
        self.rows["clusters"] = (
            ["name", "inventory_at", "received_at", "received_by", "summary"],
            [(f"cluster-{i}", now, now, "bench", "{}") for i in range(20)],
        )
        # repositories and manifest references: 5 blobs per image; every 5th image is also listed
        # by an image index (with an unscanned second platform), which workloads run by tag
        repo_ids = {name: i + 1 for i, name in enumerate(sorted({r for r, _ in self.images}))}
        self.rows["repositories"] = (
            ["id", "name", "immutable_tags", "created_at"],
            [(rid, name, False, now) for name, rid in repo_ids.items()],
        )
        refs, index_of = [], {}
        for n, (repo, digest) in enumerate(self.images):
            refs += [(repo_ids[repo], digest, _hex(rng), "blob") for _ in range(5)]
            if n % 5 == 0:
                index = index_of[digest] = _hex(rng)
                refs += [(repo_ids[repo], index, digest, "manifest"), (repo_ids[repo], index, _hex(rng), "manifest")]
        self.rows["manifest_refs"] = (["repo_id", "digest", "ref_digest", "kind"], refs)
        wl, wi = [], []
        img_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(self.images))]
        exposure = orjson.dumps(
            [{"via": "ingress", "ingress": "web", "host": "x.example", "path": "/", "service": "web", "port": 80}]
        ).decode()
        picks = rng.choices(range(len(self.images)), weights=img_weights, k=n_workloads * 3)
        img_repo: str | None  # None: a digest Hallmark does not hold
        for i in range(n_workloads):
            exposed = rng.random() < 0.10
            kind = rng.choice(["Deployment", "Deployment", "StatefulSet", "DaemonSet", "CronJob"])
            wl.append(
                (i + 1, f"cluster-{i % 20}", f"ns-{i % 200}", kind, f"w{i}", exposed, exposure if exposed else "[]")
            )
            for c in range(rng.choice([1, 1, 1, 2, 2, 3])):
                if rng.random() < 0.05:
                    digest, img_repo = _hex(rng), None
                else:
                    img_repo, digest = self.images[picks[i * 3 + c]]
                    digest = index_of.get(digest, digest)  # pulled by tag: the runtime reports the index
                wi.append(
                    (i + 1, f"c{c}", "container", f"registry.example/{img_repo}@{digest}", digest, "status", img_repo)
                )
        self.rows["workloads"] = (["id", "cluster", "namespace", "kind", "name", "exposed", "exposure"], wl)
        self.rows["workload_images"] = (
            ["workload_id", "container", "container_type", "image_ref", "digest", "digest_source", "repo_name"],
            wi,
        )


ORDER: list[Table] = [
    repositories,
    manifest_refs,
    images,
    advisory_aliases,
    image_findings,
    provenance,
    catalog_entries,
    clusters,
    workloads,
    workload_images,
]


def load(meta: MetadataStore, graph: Graph) -> float:
    """Bulk-load every table (COPY on PostgreSQL, executemany on SQLite); returns seconds."""
    started = time.perf_counter()
    raw = meta.engine.raw_connection()
    try:
        cur = raw.cursor()
        for table in ORDER:
            cols, rows = graph.rows[table.name]
            if meta.dialect == "postgresql":
                with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
            else:
                marks = ", ".join("?" for _ in cols)
                conv = [tuple(v.isoformat(" ") if hasattr(v, "isoformat") else v for v in r) for r in rows]
                cur.executemany(f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks})", conv)
        if meta.dialect == "postgresql":
            cur.execute("SELECT setval('workloads_id_seq', (SELECT max(id) FROM workloads))")
            cur.execute("SELECT setval('repositories_id_seq', (SELECT max(id) FROM repositories))")
        raw.commit()
    finally:
        raw.close()
    with meta.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, float, float, Any]:
    """(cold, best, worst) seconds and the last result."""
    t = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return cold, min(times), max(times), out


def all_rows(meta: MetadataStore, params: dict[str, str]) -> int:
    n, cursor = 0, None
    while True:
        page = explore(meta, parse_filters(params | {"limit": "1000"} | ({"cursor": cursor} if cursor else {})))
        n += len(page["rows"])
        cursor = page["next_cursor"]
        if cursor is None:
            return n


def run_queries(meta: MetadataStore, graph: Graph, label: str) -> list[str]:
    queries = [  # every row is also paged through for the selective ones (paging 70,000 rows takes a minute)
        ("exposed + critical", {"exposed": "true", "severity": "critical"}),
        ("cve (alias of the most common DSA)", {"cve": graph.popular_cve}),
        (
            "exposed + critical + kev + fix",
            {"exposed": "true", "severity": "critical", "kev": "true", "fix_available": "true"},
        ),
        ("images of a source repo running", {"view": "images", "source_repo": graph.source, "running": "true"}),
        ("package range (most common package)", {"package": "pkg0@<1.1"}),
    ]
    page_all = {"exposed + critical", "exposed + critical + kev + fix", "images of a source repo running"}
    lines = []
    for name, params in queries:
        cold, best, worst, page = timed(lambda p=params: explore(meta, parse_filters(p)))  # type: ignore[misc]
        status = "OK" if worst < 1 else "MISSED"
        line = (
            f"{label:<9} {name:<37} first page ({len(page['rows'])} rows): cold {cold * 1000:5.0f} ms, "
            f"warm {best * 1000:4.0f}-{worst * 1000:4.0f} ms [target < 1 s: {status}]"
        )
        if name in page_all:
            t = time.perf_counter()
            total = all_rows(meta, params)
            line += f"; all {total} rows in pages of 1,000: {(time.perf_counter() - t) * 1000:.0f} ms"
        print(line, flush=True)
        lines.append(line)
    return lines


@contextlib.contextmanager
def postgres_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.conftest import PostgresServer

    root = Path(tempfile.mkdtemp(prefix="hallmark-bench-pg-"))
    srv = PostgresServer(root)
    srv.start()
    try:
        yield srv.url()
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def migrated_store(backend: str, pg_url: str | None) -> Iterator[MetadataStore]:
    """An empty, migrated metadata store on ``backend`` (a throwaway SQLite file or PostgreSQL:
    ``pg_url``, else a server started for the run), disposed of afterwards."""
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            url = stack.enter_context(postgres_url(pg_url))
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallmark-bench-")))
            url = f"sqlite:///{folder / 'meta.db'}"
        engine = make_engine(url, 4)
        stack.callback(engine.dispose)
        with contextlib.redirect_stderr(io.StringIO()):
            migrate(engine)
        yield MetadataStore(engine)


def bench_backend(backend: str, graph: Graph, pg_url: str | None) -> list[str]:
    with migrated_store(backend, pg_url) as meta:
        secs = load(meta, graph)
        print(f"{backend}: loaded in {secs:.1f}s", flush=True)
        return run_queries(meta, graph, backend)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workloads", type=int, default=50_000)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: start a throw-away server)")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    graph = Graph(args.seed, args.images, args.workloads, args.findings)
    counts = {name: len(rows) for name, (_, rows) in graph.rows.items()}
    print(f"seed {args.seed}; generated in {time.perf_counter() - t:.1f}s: {counts}; cores: {os.cpu_count()}")
    crit = sum(1 for r in graph.rows["image_findings"][1] if r[8] == 4)
    print(
        f"critical findings: {crit} ({crit / max(1, counts['image_findings']):.1%}); "
        f"median findings per image: {statistics.median(_per_image(graph))}"
    )
    for backend in ["sqlite", "postgres"] if args.backend == "both" else [args.backend]:
        bench_backend(backend, graph, args.pg_url)


def _per_image(graph: Graph) -> list[int]:
    per: dict[str, int] = {}
    for r in graph.rows["image_findings"][1]:
        per[r[1]] = per.get(r[1], 0) + 1
    return list(per.values())


if __name__ == "__main__":
    main()
