"""``hallmark db update``: fetch advisory feeds into a new set folder, validate it, then switch atomically.

Each set is a folder ``<data_dir>/advisories/<n>/`` in the feeds' production
layout (``osv/<Ecosystem>/all.zip``, ``debian/...``, ``kev/...``), the same
layout as the offline snapshot, so one loader reads both. The set also carries
endoflife.date's product files (``endoflife/products/<product>.json``, only the
products :mod:`hallmark.lifecycle.eol` matches). Sources are fetched
from an https base (production) or from a mirror folder (air-gapped sites) by
the same code. Unchanged feeds are not downloaded again (ETag/Last-Modified)
but hard-linked from the previous set. Only when the new set loads completely
does one transaction mark it active; readers keep using the previous set until
then, and a failed update changes nothing. An end-of-life file the source does not
give this time (site down, not in the mirror) is carried over from the previous set,
so a bad day at endoflife.date never empties the images' lifecycle tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from hallmark.advisories.compiled import FILE_NAME as COMPILED_FILE
from hallmark.advisories.compiled import compile_index
from hallmark.advisories.index import AdvisoryIndex, load_snapshot
from hallmark.config import Config
from hallmark.lifecycle import eol_data as eol
from hallmark.pipeline import shared_sets
from hallmark.storage.base import BlobStore

log = logging.getLogger(__name__)


@dataclass
class Feed:
    """One file of the set: where it comes from and where it goes in the layout."""

    path: str  # relative path inside the set, e.g. "osv/PyPI/all.zip"
    url: str  # relative to the base (mirror folder or URL)
    required: bool = False


SUPPORT_TABLES = (
    "security-support-ended.deb10",
    "security-support-ended.deb11",
    "security-support-ended.deb12",
    "security-support-limited",
)
# Files of the offline layout besides OSV, as glob patterns under the mirror folder.
MIRROR_GLOBS = (
    "debian/security-tracker/data/DSA/list",
    "debian/security-tracker/data/DLA/list",
    "debian/security-tracker/tracker.json",
    "debian/security-support/security-support-*",
    "alpine/secdb/*/*.json",
    "kev/known_exploited_vulnerabilities.json",
    "epss/epss_scores-current.csv.gz",
)


def feeds(config: Config, base: str, base_is_mirror: bool) -> list[Feed]:
    """Every file of a set: OSV per ecosystem, then Debian, Alpine, support tables and KEV."""
    adv = config.advisories
    if base_is_mirror:
        root = Path(base.removeprefix("file://"))
        out = [Feed(f"osv/{eco}/all.zip", f"osv/{eco}/all.zip") for eco in adv.osv_ecosystems]
        for pattern in MIRROR_GLOBS:
            for found in sorted(root.glob(pattern)):
                rel = found.relative_to(root).as_posix()
                out.append(Feed(rel, rel))
        out += [Feed(rel, rel) for rel in eol.feed_files() if (root / rel).is_file()]
        return out
    out = [Feed(f"osv/{eco}/all.zip", f"{eco}/all.zip") for eco in adv.osv_ecosystems]
    out.append(Feed("debian/security-tracker/tracker.json", adv.debian_tracker_url))
    out += [Feed(f"debian/security-support/{t}", f"{adv.security_support_url}/{t}") for t in SUPPORT_TABLES]
    for rel in adv.alpine_releases:
        out += [
            Feed(f"alpine/secdb/{rel}/{repo}.json", f"{adv.alpine_secdb_url}/{rel}/{repo}.json")
            for repo in ("main", "community")
        ]
    out.append(Feed("kev/known_exploited_vulnerabilities.json", adv.kev_url))
    if adv.epss_url:
        out.append(Feed("epss/epss_scores-current.csv.gz", adv.epss_url))
    if config.lifecycle.endoflife_url:
        out += [Feed(rel, eol.feed_url(config.lifecycle.endoflife_url, rel)) for rel in eol.feed_files()]
    return out


# Files load_snapshot reads advisories from (the loading bar counts them).
ADVISORY_FEEDS = ("osv/", "debian/security-tracker/", "alpine/secdb/")


class UpdateError(Exception):
    pass


class UpdateProgress(Protocol):
    """What an update reports while it runs (the CLI draws progress bars from it; the server ignores it)."""

    def fetching(self, path: str, total: int | None) -> None: ...
    def advance(self, path: str, nbytes: int) -> None: ...
    def fetched(self, path: str, status: str) -> None: ...
    def loading(self, files: int) -> None: ...
    def loaded(self, path: str) -> None: ...


class NoProgress:
    def fetching(self, path: str, total: int | None) -> None:
        pass

    def advance(self, path: str, nbytes: int) -> None:
        pass

    def fetched(self, path: str, status: str) -> None:
        pass

    def loading(self, files: int) -> None:
        pass

    def loaded(self, path: str) -> None:
        pass


def _sets_root(config: Config) -> Path:
    return config.data_path / "advisories"


def load_active(config: Config, meta: dict[str, Any], blobs: BlobStore | None = None) -> AdvisoryIndex:
    """The active set in memory (the server: re-matching reads every package anyway); fetched from
    the blob store first when another replica imported it."""
    return load_snapshot(shared_sets.ensure_set(config, blobs, meta))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, name: str) -> None:
    """Integrity: a zip must be readable end to end (CRC of every member), JSON must start like JSON.

    Errors name the feed (``name``, its path in the set), never the work folder removed on failure.
    """
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except zipfile.BadZipFile as exc:
            raise UpdateError(f"{name}: not a zip file ({exc})") from exc
        if bad is not None:
            raise UpdateError(f"{name}: corrupt member {bad}")
    elif path.suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        if not head.startswith((b"{", b"[")):
            raise UpdateError(f"{name}: not JSON")


def _fetch(
    client: httpx.Client | None,
    base: str,
    feed: Feed,
    dest: Path,
    previous: dict[str, Any] | None,
    prev_dir: Path | None,
    progress: UpdateProgress,
) -> dict[str, Any]:
    record = _fetch_one(client, base, feed, dest, previous, prev_dir, progress)
    progress.fetched(feed.path, str(record.get("status")))
    return record


def _fetch_one(
    client: httpx.Client | None,
    base: str,
    feed: Feed,
    dest: Path,
    previous: dict[str, Any] | None,
    prev_dir: Path | None,
    progress: UpdateProgress,
) -> dict[str, Any]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"path": feed.path}
    url = feed.url if "://" in feed.url else (base.rstrip("/") + "/" + feed.url)
    if "://" not in url or url.startswith("file://"):
        src = Path(url.removeprefix("file://"))
        if not src.exists():
            record["status"] = "missing"
            return record
        size = src.stat().st_size
        progress.fetching(feed.path, size)
        shutil.copyfile(src, dest)
        progress.advance(feed.path, size)
        record.update(source=str(src), status="copied")
    else:
        assert client is not None
        headers = {}
        if previous and prev_dir is not None and (prev_dir / feed.path).exists():
            if previous.get("etag"):
                headers["If-None-Match"] = previous["etag"]
            if previous.get("last_modified"):
                headers["If-Modified-Since"] = previous["last_modified"]
        try:
            with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304 and prev_dir is not None:
                    os.link(prev_dir / feed.path, dest)
                    record.update(previous or {}, status="not-modified", source=url)
                    return record
                if resp.status_code != 200:
                    record.update(status=f"http {resp.status_code}", source=url)
                    return record
                length = resp.headers.get("Content-Length")
                progress.fetching(feed.path, int(length) if length and length.isdigit() else None)
                tmp = dest.with_suffix(dest.suffix + ".part")
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 20):
                        f.write(chunk)
                        progress.advance(feed.path, len(chunk))
                os.replace(tmp, dest)
                record.update(
                    source=url,
                    status="downloaded",
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                )
        except httpx.HTTPError as exc:
            record.update(status=f"error: {exc}", source=url)
            return record
    _check(dest, feed.path)
    record["sha256"] = _sha256(dest)
    record["size"] = dest.stat().st_size
    return record


def update(pipeline: Any, mirror: str | None = None, progress: UpdateProgress | None = None) -> dict[str, Any]:
    """Import a new advisory set and activate it; returns the import record."""
    config: Config = pipeline.config
    progress = progress or NoProgress()
    base = mirror or config.advisories.mirror or config.advisories.osv_url
    is_mirror = "://" not in base or base.startswith("file://")
    if is_mirror and not Path(base.removeprefix("file://")).is_dir():
        raise UpdateError(f"mirror folder {base} does not exist")
    root = _sets_root(config)
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = root / stamp
    work = root / f".{stamp}.tmp"
    work.mkdir()
    active = pipeline.store.active_advisory_set()
    prev_records = {r["path"]: r for r in (active["sources"]["files"] if active else [])}
    prev_dir = root / active["sources"]["folder"] if active else None
    client = None if is_mirror else httpx.Client(timeout=120, follow_redirects=True)
    try:
        files = [
            _fetch(client, base, feed, work / feed.path, prev_records.get(feed.path), prev_dir, progress)
            for feed in feeds(config, base, is_mirror)
        ]
        got = [f for f in files if "sha256" in f and not f["path"].startswith(eol.FOLDER)]
        if not got:
            raise UpdateError(f"no advisory feed could be fetched from {base}")
        files = _keep_previous_eol(files, work, prev_dir, prev_records)
        progress.loading(len([f for f in got if f["path"].startswith(ADVISORY_FEEDS)]))
        # Validates the whole set before anyone uses it.
        index = load_snapshot(work, lambda p: progress.loaded(p.relative_to(work).as_posix()))
        compile_index(index, work / COMPILED_FILE)  # what CLI scans read (hallmark/advisories/compiled.py)
        try:
            products = eol.load_products(work)
        except eol.EolDataError as exc:
            raise UpdateError(f"end-of-life data rejected: {exc}") from exc
        os.replace(work, folder)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, Exception) and str(work) in str(exc):  # name the feed, not a folder now gone
            raise UpdateError(str(exc).replace(str(work) + os.sep, "")) from exc
        raise
    finally:
        if client is not None:
            client.close()
    sources = {
        "folder": stamp,
        "base": base,
        "imported_at": dt.datetime.now(dt.UTC).isoformat(),
        "files": files,
        "stats": [_stats(s, work) for s in index.imports],
        "advisories": len(index.advisories),
        "ecosystems": sorted(index.ecosystems),
    }
    end_of_life = eol.import_record(products, files)
    end_of_life["changed"] = end_of_life["digest"] != (
        (active["sources"].get("endoflife") or {}).get("digest") if active else None
    )
    sources["endoflife"] = end_of_life
    # Before the switch: a rule bundle that fails, or a blob store that refuses the set, switches nothing.
    sources["rules"] = install_rules(config, Path(base.removeprefix("file://"))) if is_mirror else []
    try:
        _publish(pipeline, folder, sources, active)
    except (OSError, ValueError, shared_sets.SharedSetError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UpdateError(f"cannot publish the advisory set to the blob store for other replicas: {exc}") from exc
    digest = "sha256:" + hashlib.sha256(repr(sorted((f["path"], f.get("sha256")) for f in files)).encode()).hexdigest()
    set_id = pipeline.store.add_advisory_set(digest, sources)
    pipeline.store.add_event("advisories.updated", None, None, {"set": set_id, "advisories": sources["advisories"]})
    payload = {"set": set_id, "endoflife_changed": end_of_life["changed"]}
    pipeline.jobs.enqueue("rematch", f"set-{set_id}", payload)
    pipeline.wake()
    _prune(root, keep={stamp, active["sources"]["folder"] if active else stamp})
    if sources.get("bundle"):  # the active and the previous set, and the rules, stay in the blob store
        previous = active["sources"].get("bundle") if active else None
        keep = [str(b) for b in (sources["bundle"], previous, sources.get("rules_bundle")) if b]
        shared_sets.prune_shared(pipeline.blobs, keep)
    if sources["rules"]:  # stored images are re-checked with the new rules, as they are re-matched
        pipeline.jobs.enqueue("content-recheck", "rules", {"rules": sources["rules"]})
        pipeline.wake()
    return {"set": set_id, **sources}


def _publish(pipeline: Any, folder: Path, sources: dict[str, Any], active: dict[str, Any] | None) -> None:
    """Replicas without a shared disk fetch the set and the rules from the blob store
    (:mod:`hallmark.pipeline.shared_sets`); the digests go into the set's row."""
    config: Config = pipeline.config
    if not shared_sets.shared_storage(config):
        return
    sources["bundle"] = shared_sets.publish_folder(pipeline.blobs, folder)
    if sources["rules"]:
        sources["rules_bundle"] = shared_sets.publish_rules(config, pipeline.blobs)
    elif active and active["sources"].get("rules_bundle"):  # the rules installed earlier stay in force
        sources["rules_bundle"] = active["sources"]["rules_bundle"]


def _keep_previous_eol(
    files: list[dict[str, Any]], work: Path, prev_dir: Path | None, prev_records: dict[str, Any]
) -> list[dict[str, Any]]:
    """End-of-life files the source did not give (an error, a 404, absent from the mirror) are
    hard-linked from the previous set, recorded as kept with why."""
    if prev_dir is None:
        return files
    by_path = {f["path"]: f for f in files}
    for rel in eol.feed_files():
        mine = by_path.get(rel)
        src = prev_dir / rel
        if (mine is not None and "sha256" in mine) or not src.is_file():
            continue
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        os.link(src, dest)
        kept = {k: v for k, v in (prev_records.get(rel) or {}).items() if k in ("source", "etag", "last_modified")}
        why = mine.get("status") if mine is not None else "not offered by the source"
        kept.update(path=rel, status=f"kept from the previous set ({why})", sha256=_sha256(dest))
        kept["size"] = dest.stat().st_size
        by_path[rel] = kept
    return list(by_path.values())


RULE_FOLDERS = ("yara", "secrets", "blocklist")


def install_rules(config: Config, mirror: Path) -> list[str]:
    """Copy the content-check rule bundles (YARA, gitleaks secrets, SHA-256 blocklist) from a mirror.

    The new bundle is assembled beside the old one and swapped in with renames; a
    reader that catches the instant between them falls back to the built-in rules.
    """
    present = [name for name in RULE_FOLDERS if (mirror / name).is_dir()]
    if not present:
        return []
    dest = config.rules_path
    staging = dest.with_name(dest.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in present:
        shutil.copytree(mirror / name, staging / name)
    from hallmark.content import RulesError, load_rules

    try:
        load_rules(staging)  # a broken bundle never replaces a working one
    except RulesError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UpdateError(f"rule bundle rejected: {exc}") from exc
    shared_sets.replace_folder(staging, dest)
    return present


def _stats(stats: Any, work: Path) -> dict[str, Any]:
    """One loader's statistics; its source as the path in the set (the work folder is renamed away)."""
    doc = stats.as_dict() if hasattr(stats, "as_dict") else {"repr": repr(stats)}
    doc = dict(orjson.loads(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)))
    source = doc.get("source")
    if isinstance(source, str) and source.startswith(str(work) + os.sep):
        doc["source"] = Path(source).relative_to(work).as_posix()
    return doc


def _prune(root: Path, keep: set[str]) -> None:
    """Keep the new and the previous set (readers may still hold the previous one)."""
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
