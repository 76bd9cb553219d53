"""``hallmark scan REF``: index an image, match it against advisory data, run the requested
content checks, apply VEX triage and print a report, with an exit code for CI pipelines.

Exit codes (documented in docs/report-schema.md):

* 0 - scan finished and no unsuppressed finding reaches ``--fail-on`` (or no ``--fail-on``);
* 1 - ``--fail-on`` given and an unsuppressed finding reaches it: vulnerabilities, exposed
  secrets and configuration checks by their severity, malware always as critical (the count
  the catalog's approval gate uses); findings without a known severity count only with
  ``--fail-on-unknown`` (default: they are listed, not failed on);
* 2 - usage or input error (bad option, unreadable REF, VEX, ``--db`` or rules; image that
  cannot be indexed);
* 3 - ``--fail-on`` given, nothing reached it, but the result is incomplete: no advisory
  data at all, or an OS release with no advisory data (e.g. Debian 12 on a snapshot without
  bookworm). "No findings" would then be a false "clean"; ``--allow-incomplete`` makes
  this case exit 0 instead. Without ``--fail-on`` the warning is printed and the exit is 0.

All four scanners (vuln, malware, secret, config) run unless ``--scanners`` picks some.
Content checks share the indexer's single read of each layer (``index_image(on_entry=)``), and
their results are cached per layer in the user cache (:mod:`hallmark.content.cache`).
"""

from __future__ import annotations

import datetime as dt
import sys
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console

from hallmark.cli._common import ConfigOption, DataDirOption, get_config
from hallmark.cli._registry import REF_HELP, CredsOption, InsecureOption, PasswordStdinOption, UsernameOption

SCANNERS = ("vuln", "malware", "secret", "config")
EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


class Format(StrEnum):
    json = "json"
    sarif = "sarif"
    cyclonedx = "cyclonedx"
    openvex = "openvex"
    table = "table"


class Threshold(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"


def _fail(msg: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def _parse_scanners(text: str) -> set[str]:
    wanted = {s.strip().lower() for s in text.split(",") if s.strip()}
    unknown = wanted - set(SCANNERS)
    if unknown or not wanted:
        raise _fail(f"--scanners: unknown {', '.join(sorted(unknown)) or '(empty)'}; use {','.join(SCANNERS)}")
    return wanted


def _advisories(db: str | None, data_dir: str | None, config_file: str | None) -> tuple[dict[str, Any], Any] | None:
    """(set metadata, AdvisoryIndex) from ``--db`` or the data folder's active set, or None."""
    from hallmark.advisories.compiled import open_folder

    if db is not None:
        path = Path(db)
        if not path.is_dir():
            raise _fail(f"--db {db}: not a folder")
        idx = open_folder(path)  # compiled once into the cache, then read per package
        if not idx.ecosystems:
            raise _fail(
                f"--db {db}: no advisory feeds found (expected osv/<Ecosystem>/all.zip, debian/..., alpine/...)"
            )
        mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat().replace("+00:00", "Z")
        return {"id": f"dir:{path.resolve()}", "created_at": mtime}, idx
    cfg = get_config(data_dir, config_file)
    url = cfg.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # no data folder database yet: do not create one as a side effect
    try:
        from hallmark.pipeline.active_set import open_active, read_active_set

        meta = read_active_set(url)  # SQLite without SQLAlchemy: a scan's start-up counts
        if meta is None:
            return None
        blobs = None
        if not (cfg.data_path / "advisories" / str(meta["sources"]["folder"])).is_dir():
            from hallmark.app import open_blob_store  # imported by another replica: in the blob store

            blobs = open_blob_store(cfg)
        return meta, open_active(cfg, meta, blobs)  # the compiled set: reads only this image's packages
    except Exception as exc:  # an unreadable/old database means "no data", said loudly below
        typer.echo(f"warning: cannot read the active advisory set from {url}: {exc}", err=True)
        return None


def _source_label(rel: str) -> str | None:
    """``osv/PyPI/all.zip`` -> ``osv:PyPI``; the names people know the feeds by (None: not advisories)."""
    parts = rel.replace("\\", "/").strip("/").split("/")
    if parts[0] == "osv" and len(parts) > 2:
        return f"osv:{parts[1]}"
    if parts[:2] == ["debian", "security-tracker"]:
        return "debian-tracker"
    if parts[0] == "alpine":
        return "alpine-secdb"
    if parts[0] == "kev":
        return "cisa-kev"
    if parts[0] in ("epss", "nvd"):
        return parts[0]
    return None  # end-of-life product data, Debian support tables: not advisories


def _describe_set(meta: dict[str, Any], idx: Any, db: str | None) -> dict[str, Any]:
    """``date`` and ``sources`` of the advisory set, for the report header (the id means nothing to a reader)."""
    rels: list[str] = []
    date = str(meta.get("created_at") or "")
    if db is not None:
        base = Path(db).resolve()
        newest = 0.0
        for stats in getattr(idx, "imports", None) or []:
            path = Path(str(stats.source))
            try:
                rels.append(str(path.resolve().relative_to(base)))
                newest = max(newest, path.stat().st_mtime)
            except (ValueError, OSError):
                continue
        if newest:
            date = dt.datetime.fromtimestamp(newest, dt.UTC).isoformat()
    else:
        sources = meta.get("sources") or {}
        rels = [str(f.get("path")) for f in sources.get("files") or [] if f.get("sha256")]
        date = str(sources.get("imported_at") or date)
    labels = [lab for lab in map(_source_label, rels) if lab]
    return {"date": date[:10], "sources": sorted(set(labels), key=labels.index)}


def _gate(report: dict[str, Any], fail_on: str | None, fail_on_unknown: bool) -> dict[str, dict[str, int]]:
    """Unsuppressed findings that fail the run, per kind and severity, counted as the catalog's
    approval gate counts them (:func:`hallmark.pipeline.findings.combine`: vulnerabilities,
    exposed secrets and configuration checks by severity, malware always critical)."""
    from hallmark.pipeline.findings import at_or_above, combine, content_by_kind
    from hallmark.report.base import active_findings

    vulns: dict[str, int] = {}
    for f in active_findings(report):
        sev = str(f.get("severity") or "unknown")
        vulns[sev] = vulns.get(sev, 0) + 1
    content = content_by_kind(report["content_findings"]) if "content_findings" in report else None
    combined = combine(vulns, content)
    out = at_or_above(combined, fail_on) if fail_on else {}
    if fail_on_unknown:
        for kind, counts in combined["by_kind"].items():
            if counts.get("unknown"):
                out.setdefault(kind, {})["unknown"] = counts["unknown"]
    return out


class _ContentRun:
    """Content checks riding along on the indexer's layer read.

    Each layer's results are cached in the user cache by (layer digest, rules digest, options,
    checker; :mod:`hallmark.content.cache`): a layer already checked with these rules is not
    checked again, and the YARA rules are loaded only when some layer is not in the cache.
    When every layer is cached (:meth:`all_cached`) no layer needs reading for the content
    checks at all: the cross-layer view (whiteouts, replaced files) comes from the cache too.
    """

    def __init__(self, scanners: set[str], rules_dir: str | None, data_rules: Path, workers: int | None = None) -> None:
        from hallmark.advisories.compiled import cache_root
        from hallmark.content import LayerHistory, ScanOptions, load_rules, normalize_path
        from hallmark.content.cache import LayerResultCache
        from hallmark.content.model import ScanOutcome
        from hallmark.content.rules import bundle_digest
        from hallmark.index.walker import DIR, FILE, OPAQUE, WHITEOUT

        self.kinds = scanners & {"malware", "secret", "config"}
        self.workers = workers  # content-check processes; None: parallel.default_workers()
        folder: str | Path | None = rules_dir
        if folder is None and data_rules.is_dir():
            folder = data_rules
        self.folder = folder
        self.rules_source = str(folder) if folder is not None else "built-in"
        self.options = ScanOptions(
            secrets="secret" in self.kinds, malware="malware" in self.kinds, config="config" in self.kinds
        )
        # secret rules and blocklist now (cheap; bad rule files fail before any reading), YARA on the first miss
        self.light = load_rules(folder, yara=False)
        self.digest = bundle_digest(folder, yara="malware" in self.kinds)
        self.cache_dir = cache_root()
        self.cache = LayerResultCache(self.cache_dir / "content", self.digest, self.options)
        self.history = LayerHistory()
        self.outcome = ScanOutcome()
        self._outcome = ScanOutcome
        self._normalize = normalize_path
        self._kinds = (FILE, DIR, WHITEOUT, OPAQUE)
        self._full: Any = None
        self._checks: Any = None  # OrderedChecks: the files of layers not cached, in worker processes
        self._slots: dict[int, list[Any]] = {}  # layer index -> its files' outcomes or tickets, in entry order
        self._collected = False
        self._layers: dict[int, tuple[str, Any]] = {}  # layer index -> (digest, LayerResult to fill, or None: cached)
        self._image_layers: list[str] = []

    def all_cached(self, layers: list[str]) -> bool:
        """Take every layer's result from the cache if all are there (then ``on_entry`` is not
        needed); otherwise take none, and the layers are checked as they are read."""
        self._image_layers = list(layers)
        hits = [self.cache.get(digest, i) for i, digest in enumerate(layers)]
        if not all(hit is not None for hit in hits):
            self._start_checks()  # before the first layer is opened: the workers get ready meanwhile
            return False
        from hallmark.content.cache import relevant_paths

        cached = [hit for hit in hits if hit is not None]
        paths = relevant_paths(f for hit in cached for f in hit.outcome.findings)
        for i, (digest, hit) in enumerate(zip(layers, cached, strict=True)):
            self.outcome.extend(hit.outcome)
            hit.replay(self.history, i, paths)  # only what the findings' correlation reads
            self._layers[i] = (digest, None)
        return True

    def _bundle(self) -> Any:
        """The complete rule bundle (compiled YARA rules cached by digest in the user cache)."""
        from hallmark.content import load_rules

        if self._full is None:
            self._full = load_rules(self.folder, yara="malware" in self.kinds, cache_dir=self.cache_dir / "yara")
        return self._full

    def _start_checks(self) -> None:
        """Fork the content-check workers (once). One worker loads the complete rules itself,
        while this process goes on reading: the ~0.1 s of loading YARA is then off the
        critical path (this process needs only the light rules). Several workers share rules
        loaded here before the fork instead."""
        from hallmark.content import ContentScanner
        from hallmark.content.parallel import OrderedChecks, default_workers

        if self._checks is not None:
            return
        workers = default_workers() if self.workers is None else self.workers
        if workers > 1:
            self._bundle()
        self._checks = OrderedChecks(
            lambda: ContentScanner(self._bundle(), self.options), ContentScanner(self.light, self.options), workers
        )

    def _layer(self, index: int, digest: str) -> Any:
        """This layer's result to fill, or None when it came from the cache."""
        state = self._layers.get(index)
        if state is None:
            from hallmark.content.cache import LayerResult

            hit = self.cache.get(digest, index)
            if hit is not None:
                self.outcome.extend(hit.outcome)
            else:
                self._start_checks()
            state = self._layers[index] = (digest, None if hit is not None else LayerResult())
            self._slots[index] = []
        return state[1]

    def on_entry(self, entry: Any, stream: IO[bytes] | None) -> None:
        """Every tar entry of the image, once (called ~10,000 times per image: no imports here)."""
        path = self._normalize(entry.path)
        kind = entry.kind
        file, folder, whiteout, opaque = self._kinds
        op = 1 if kind == whiteout else 2 if kind == opaque else 0  # hallmark.content.cache.EVENTS
        (self.history.add, self.history.delete, self.history.opaque)[op](entry.layer_index, path)
        layer = self._layer(entry.layer_index, entry.layer_digest)
        if layer is None:
            return
        layer.events.append((op, path))
        slots = self._slots[entry.layer_index]
        if kind == file and stream is not None:
            self._checks.file(slots, path, entry.layer_index, entry.layer_digest, stream, entry.size, entry.mode)
        elif kind == folder:
            light = self._checks.light
            slots.append(
                self._outcome(light.scan_metadata(path, entry.layer_index, entry.layer_digest, entry.mode, is_dir=True))
            )

    def collect(self) -> None:
        """Take the layers' results from the workers, store them and stop the workers (before
        the vulnerability report is built: their memory is not held beside it). Called only
        after every layer was read to its end (a failed index stores nothing); once."""
        from hallmark.content.cache import LayerResult

        if self._collected:
            return
        self._collected = True
        for i, digest in enumerate(self._image_layers):  # layers without entries are results too
            self._layers.setdefault(i, (digest, LayerResult()))
        try:
            for i, (digest, layer) in self._layers.items():
                if layer is not None:
                    if self._checks is not None:
                        layer.outcome.extend(self._checks.outcome(self._slots.pop(i, [])))
                    self.outcome.extend(layer.outcome)
                    self.cache.put(digest, layer)
        finally:
            self.close()

    def finish(self, config_doc: dict[str, Any] | None) -> dict[str, Any]:
        """Collect the layers (if not yet), then add the config checks and correlate."""
        from collections import Counter

        from hallmark.content import ContentScanner, correlate_layers
        from hallmark.content.model import SEVERITY_ORDER

        self.collect()
        if config_doc is not None:
            # the image config needs the secret rules only
            self.outcome.extend(ContentScanner(self.light, self.options).scan_config(config_doc))
        bundle = self._full if self._full is not None else self._bundle_info()
        found = [f for f in correlate_layers(self.outcome.findings, self.history) if f.kind in self.kinds]
        found.sort(key=lambda f: (-SEVERITY_ORDER.get(f.severity, 0), f.kind, f.path or f.location or ""))
        skipped = [s for s in self.outcome.skipped if s.reason != "binary"]
        return {
            "content_findings": [f.to_dict() for f in found],
            "content_scan": {
                "scanners": sorted(self.kinds),
                "rules": self.rules_source,
                "rules_digest": self.digest,
                "rule_warnings": bundle.warnings[:50],
                "skipped": len(skipped),
                "skipped_by_reason": dict(sorted(Counter(s.reason for s in skipped).items())),
            },
        }

    def close(self) -> None:
        """Stop the worker processes (after a failed index too); safe to call twice."""
        if self._checks is not None:
            self._checks.close()

    def _bundle_info(self) -> Any:
        """Rule warnings without compiling YARA when no layer needed it: YARA files that do not
        compile are never cached compiled, so only a clean YARA set is skipped here."""
        from hallmark.content.rules import yara_cached

        if "malware" in self.kinds and not yara_cached(self.folder, self.cache_dir / "yara"):
            return self._bundle()  # warnings come from compiling: compile (and warn) as a fresh run does
        return self.light


def _base_advice(source: Any, manifest: Any, data_dir: str | None, config_file: str | None) -> dict[str, Any] | None:
    """The base image and upgrade advice for the table output, judged by a catalog: the Hallmark
    server the image is pulled from (its image document's ``base``/``advice``), else the local data
    folder's catalog (by the image's layers and annotations). None when no catalog can say:
    the table then says nothing about a base rather than guess."""
    import json

    from hallmark.oci import OciError

    get_json = getattr(source, "get_json", None)
    if get_json is not None:
        try:
            doc = get_json(f"/api/v1/repositories/{source.ref.repository}/images/{manifest.digest}")
        except OciError:
            doc = None  # not a Hallmark server, the image not there, or not readable with these credentials
        if isinstance(doc, dict) and "base" in doc:
            return {"catalog": source.ref.host, "base": doc.get("base"), "advice": doc.get("advice")}
    cfg = get_config(data_dir, config_file)
    url = cfg.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        from hallmark.discovery.base import advice_for_layers
        from hallmark.metadata.db import make_engine
        from hallmark.metadata.store import MetadataStore

        annotations = json.loads(manifest.raw).get("annotations")
        layers = [d.digest for d in manifest.layers]
        meta = MetadataStore(make_engine(url))
        found = advice_for_layers(
            meta, layers, annotations if isinstance(annotations, dict) else {}, cfg.lifecycle.eol_soon_days
        )
    except Exception as exc:  # an unreadable/old database: no advice, said once
        typer.echo(f"warning: no base image advice: cannot read the catalog at {url}: {exc}", err=True)
        return None
    return {"catalog": str(cfg.data_path), **found}


def _index_cache() -> Any:
    """Per-layer and per-image index results in the user cache, in a folder named by a digest
    of the indexer's sources (a changed indexer never reads an older indexer's results)."""
    import hashlib

    import hallmark.index
    from hallmark.advisories.compiled import cache_root
    from hallmark.index import FileCache

    root = Path(hallmark.index.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return FileCache(str(cache_root() / "index" / h.hexdigest()[:32]))


def scan(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    fail_on: Annotated[
        Threshold | None, typer.Option("--fail-on", help="Exit 1 when an unsuppressed finding is this severe or worse.")
    ] = None,
    scanners: Annotated[
        str, typer.Option("--scanners", help="Comma-separated subset of vuln,malware,secret,config (default: all).")
    ] = ",".join(SCANNERS),
    fail_on_unknown: Annotated[
        bool,
        typer.Option(
            "--fail-on-unknown",
            help="Exit 1 also for findings without a known severity (default: they do not fail the run).",
        ),
    ] = False,
    vex: Annotated[
        list[str] | None, typer.Option("--vex", help="OpenVEX document (repeatable): suppress triaged findings.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Advisory feed folder (the db update --mirror layout) instead of the active set."),
    ] = None,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Rule folder for content checks (secrets/, yara/, blocklist/).")
    ] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="With --fail-on: exit 0, not 3, when advisory data is missing.")
    ] = False,
    insecure: InsecureOption = False,
    creds: CredsOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    platform: Annotated[
        str | None, typer.Option("--platform", help="os/arch or os/arch/variant to pick from an index.")
    ] = None,
    data_dir: DataDirOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Scan an image for vulnerabilities, malware, exposed secrets and configuration issues (--scanners picks some)."""
    from hallmark.cli._registry import open_image
    from hallmark.index import index_image
    from hallmark.index.inflate import spare_core
    from hallmark.oci import Descriptor, OciError
    from hallmark.pipeline.vuln_report import make_report
    from hallmark.report import VexError, apply_vex, get_format, load_vex, summarize
    from hallmark.report.table import print_report

    wanted = _parse_scanners(scanners)
    try:
        vex_docs = [load_vex(p) for p in vex or []]
    except VexError as exc:
        raise _fail(str(exc)) from exc
    for d in vex_docs:
        for w in d.warnings:
            typer.echo(f"warning: {d.source}: {w}", err=True)
    active = _advisories(db, data_dir, config_file) if "vuln" in wanted else None

    content: _ContentRun | None = None
    if wanted & {"malware", "secret", "config"}:
        from hallmark.content import RulesError

        data_rules = Path(".")
        if rules is None:
            data_rules = get_config(data_dir, config_file).rules_path
        try:
            content = _ContentRun(wanted, rules, data_rules)
        except RulesError as exc:
            raise _fail(f"rules: {exc}") from exc

    try:
        source = open_image(
            ref, insecure=insecure, platform=platform, creds=creds, username=username, password_stdin=password_stdin
        )
    except OciError as exc:
        raise _fail(str(exc)) from exc
    config_doc: dict[str, Any] | None = None
    base_doc: dict[str, Any] | None = None
    try:
        try:
            manifest = source.get_manifest()
            config = source.get_config(manifest)
        except OciError as exc:
            raise _fail(str(exc)) from exc
        by_digest = {d.digest: d for d in manifest.layers}

        def open_layer(digest: str) -> Any:
            return source.open_blob(by_digest.get(digest) or Descriptor("", digest))

        layers = [d.digest for d in manifest.layers]
        hook = content.on_entry if content is not None and not content.all_cached(layers) else None
        result = index_image(
            manifest.raw,
            config,
            open_layer,
            manifest_digest=manifest.digest,
            cache=_index_cache(),
            on_entry=hook,
            inflate_apart=spare_core(),
        )
        if fmt == Format.table and result.status == "done":
            base_doc = _base_advice(source, manifest, data_dir, config_file)
        if content is not None and result.status == "done" and wanted & {"config", "secret"}:
            import json

            try:
                config_doc = json.loads(config)
            except ValueError as exc:
                typer.echo(f"warning: image config not checked: {exc}", err=True)
    except BaseException:
        if content is not None:
            content.close()  # the worker processes, if a layer was being checked
        raise
    finally:
        source.close()
    if result.status != "done":
        if content is not None:
            content.close()
        raise _fail(result.failure or "index failed")

    if content is not None:
        from hallmark.content.parallel import WorkerLost

        try:
            content.collect()
        except WorkerLost as exc:
            raise _fail(str(exc)) from exc
    report = make_report(result, active, source.name, result.image_digest or "")
    if "vuln" not in wanted:
        report["notes"] = ["vulnerability matching not requested (--scanners)"]
    elif active is not None:
        report["advisory_set"].update(_describe_set(active[0], active[1], db))
        if db is not None:
            report["advisory_set"]["source"] = db
    if content is not None:
        report.update(content.finish(config_doc))
    report["scanners"] = sorted(wanted)
    report = apply_vex(report, vex_docs) if vex_docs else {**report, "summary": summarize(report)}
    if base_doc is not None:  # table output only: not part of the report schema
        report["base_image"] = base_doc

    formatter = get_format(fmt.value)
    if fmt == Format.table and not output:
        # Piped or captured output is read by tools and logs: do not wrap it at 80 columns.
        print_report(report, Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True))
    else:
        text = formatter.render(report)
        if output:
            from hallmark.cli._output import write_output

            write_output(output, text)
        else:
            sys.stdout.write(text + "\n")

    incomplete = "vuln" in wanted and (report.get("advisory_set") is None or bool(report.get("unsupported_releases")))
    if fmt != Format.table or output:  # the terminal table already shows the notes
        for note in report.get("notes") or []:
            typer.echo(f"warning: {note}", err=True)
    if fail_on is None and not fail_on_unknown:
        return
    crossed = _gate(report, fail_on.value if fail_on else None, fail_on_unknown)
    if crossed:
        from hallmark.pipeline.findings import KIND_LABELS

        total = sum(n for counts in crossed.values() for n in counts.values())
        limit = " or ".join(
            x for x in (f"at or above {fail_on.value}" if fail_on else "", "unknown" if fail_on_unknown else "") if x
        )
        detail = "; ".join(
            f"{KIND_LABELS.get(kind, kind)}: " + ", ".join(f"{n} {sev}" for sev, n in counts.items())
            for kind, counts in crossed.items()
        )
        typer.echo(f"{total} unsuppressed finding(s) {limit} ({detail})", err=True)
        raise typer.Exit(EXIT_THRESHOLD)
    if incomplete and not allow_incomplete:
        typer.echo("result incomplete: the image is NOT known to be clean (exit 3; --allow-incomplete)", err=True)
        raise typer.Exit(EXIT_INCOMPLETE)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
