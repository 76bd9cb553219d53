"""End of life of an image's base OS and of the runtimes, frameworks and servers inside it.

The data is endoflife.date's, imported by ``hallmark db update`` into the advisory set folder
(``endoflife/products/<product>.json``), so it shares the advisory feeds' conditional requests,
atomic switch and import record (:mod:`hallmark.pipeline.advisory_sets`). Only the products
listed in :data:`~hallmark.lifecycle.eol_data.PRODUCTS` are fetched. A product file may be in either layout, and one
function (:func:`~hallmark.lifecycle.eol_data.normalise`) reads both into :class:`Product`:

* the endoflife-date/endoflife.date repository's front matter as JSON (the offline snapshot
  ``shared/data/endoflife/products/``): ``{"title", "releases": [{"releaseCycle", "eol",
  "eoes", "eoas", "lts", "releaseDate", "latest", "codename"}]}``;
* the live API ``<endoflife_url>/<product>.json``: a list of ``{"cycle", "eol",
  "extendedSupport", "support", "lts", "releaseDate", "latest", "codename"}``
  (and the newer ``/v1/products/<product>`` document, ``{"result": {"releases": [...]}}``).

``eol`` and ``extendedSupport`` are a date, ``true`` (ended, date not published) or ``false``
(no end announced). What an image contains is found from its stored inventory and image
config, never its layers (:func:`subjects`): the OS release (os-release), OS packages of
interpreters and servers (``python3.11``, ``nodejs``, ``openjdk-17-jre``, ``php8.2-cli``...),
the Go toolchain of Go binaries (build info), framework packages (Django, Spring Boot, Rails,
Laravel...), ``lib/pythonX.Y/site-packages`` folders, and the version variables official
images set (``NODE_VERSION``, ``PYTHON_VERSION``, ``JAVA_VERSION``...), since a runtime built
from source (``/usr/local/bin/node``) leaves no package record. Each is matched to a release
cycle by its longest dotted version prefix (``3.11.2`` -> ``3.11``; ``20.11.0`` -> ``20``).

Status, for a cycle whose end of life is ``eol`` and ``today`` (UTC): ``eol`` from that day on,
``eol_soon`` while it is at most ``[lifecycle] eol_soon_days`` away, else ``supported``. The
stored document keeps what was found (``subjects``), so a new data set or a new day recomputes
every image from the database alone (:func:`refresh_all`, the daily ``eol`` job), and every
read of an image recomputes the statuses (:func:`view`).

OpenJDK from a distribution other than Red Hat's (Debian, Ubuntu, Alpine packages) and the
official images' ``JAVA_VERSION`` are matched to Eclipse Temurin, whose cycles follow the
upstream OpenJDK update releases; the distribution may patch its build for longer.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, tuple_, update

from hallmark.index import INDEXER_VERSION, IndexResult
from hallmark.lifecycle.eol_data import (
    PRODUCTS,
    SOURCE,
    Cycle,
    Product,
    active_products,
)
from hallmark.metadata.store import MetadataStore, utcnow
from hallmark.pipeline.tables import images

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

log = logging.getLogger(__name__)

RULES = "1"  # bump when the matching rules change: stored subjects are then found again
MAX_SOURCES = 5  # per subject: a Go image with 200 binaries names a few and counts the rest
STATUSES = ("supported", "eol_soon", "eol")

_KIND_ORDER = {"os": 0, "runtime": 1, "framework": 2, "server": 3}
JAVA_PRODUCTS = frozenset(
    {"eclipse-temurin", "red-hat-build-of-openjdk", "amazon-corretto", "microsoft-build-of-openjdk"}
)

#: os-release ``ID`` -> product.
DISTROS: dict[str, str] = {
    "debian": "debian",
    "ubuntu": "ubuntu",
    "alpine": "alpine-linux",
    "rhel": "rhel",
    "centos": "centos",
    "rocky": "rocky-linux",
    "almalinux": "almalinux",
    "ol": "oracle-linux",
    "amzn": "amazon-linux",
    "fedora": "fedora",
    "opensuse-leap": "opensuse",
    "sles": "sles",
    "photon": "vmware-photon",
}
RED_HAT_LIKE = frozenset({"rhel", "centos", "rocky", "almalinux", "ol", "fedora"})

#: OS packages (any distribution) -> product; the version is the package's, unless the rule
#: takes it from the name (group ``v``: ``openjdk-17-jre`` is Java 17 whatever its version says).
_OS_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), product)
    for p, product in (
        (r"python\d\.\d+(-minimal)?$", "python"),
        (r"python3$", "python"),
        (r"python3\d+$", "python"),  # RHEL 8 modules: python39, python311
        (r"nodejs(-current)?$", "nodejs"),
        (r"golang-(?P<v>\d\.\d+)-go$", "go"),
        (r"(go|golang)$", "go"),
        (r"ruby\d\.\d+$", "ruby"),
        (r"ruby$", "ruby"),
        (r"php\d\.\d+-(cli|common|fpm)$", "php"),
        (r"php\d{2}$", "php"),  # Alpine: php82, php83
        (r"php(-cli)?$", "php"),
        (r"(dotnet|aspnetcore)-(runtime|sdk)-(?P<v>\d+\.\d+)$", "dotnet"),
        (r"(dotnet|aspnetcore)(?P<v>\d+)-(runtime|sdk)$", "dotnet"),  # Alpine: dotnet8-runtime
        (r"temurin-(?P<v>\d+)-(jdk|jre)$", "eclipse-temurin"),
        (r"java-(?P<v>\d+(\.\d+\.\d+)?)-amazon-corretto(-devel|-headless)?$", "amazon-corretto"),
        (r"msopenjdk-(?P<v>\d+)$", "microsoft-build-of-openjdk"),
        (r"java-(?P<v>\d+(\.\d+\.\d+)?)-openjdk(-headless)?$", "red-hat-build-of-openjdk"),
        (r"openjdk-(?P<v>\d+)-(jre|jdk)(-headless)?$", "eclipse-temurin"),  # Debian, Ubuntu
        (r"openjdk(?P<v>\d+)(-jre|-jdk|-jre-headless)?$", "eclipse-temurin"),  # Alpine
        (r"tomcat\d*$", "tomcat"),
        (r"nginx$", "nginx"),
        (r"(apache2|httpd)$", "apache-http-server"),
        (r"postgresql(-?\d+(\.\d+)?)?(-server)?$", "postgresql"),
        (r"(redis|redis-server)$", "redis"),
        (r"mariadb-server$", "mariadb"),
        (r"(mysql-server|mysql-community-server)$", "mysql"),
        (r"mongodb-org-server$", "mongodb"),
    )
)
#: Language packages: (ecosystem, package name) -> product.
_LANGUAGE_PACKAGES: dict[tuple[str, str], str] = {
    ("PyPI", "django"): "django",
    ("Maven", "org.springframework.boot:spring-boot"): "spring-boot",
    ("Maven", "org.springframework:spring-core"): "spring-framework",
    ("Maven", "org.apache.tomcat.embed:tomcat-embed-core"): "tomcat",
    ("RubyGems", "rails"): "ruby-on-rails",
    ("RubyGems", "railties"): "ruby-on-rails",
    ("Packagist", "laravel/framework"): "laravel",
    ("Packagist", "symfony/http-kernel"): "symfony",
    ("npm", "express"): "express",
}
#: Version variables of the official images (``ENV`` in the image config) -> product.
ENV_VARS: dict[str, str] = {
    "NODE_VERSION": "nodejs",
    "PYTHON_VERSION": "python",
    "GOLANG_VERSION": "go",
    "JAVA_VERSION": "eclipse-temurin",
    "RUBY_VERSION": "ruby",
    "PHP_VERSION": "php",
    "DOTNET_VERSION": "dotnet",
    "ASPNET_VERSION": "dotnet",
    "TOMCAT_VERSION": "tomcat",
    "NGINX_VERSION": "nginx",
    "HTTPD_VERSION": "apache-http-server",
    "PG_VERSION": "postgresql",
    "REDIS_VERSION": "redis",
    "MARIADB_VERSION": "mariadb",
    "MYSQL_VERSION": "mysql",
    "MONGO_VERSION": "mongodb",
}
_SITE_PACKAGES = re.compile(r"(?:^|/)lib/python(\d\.\d+)/(?:site|dist)-packages(?:/|$)")


# -- what an image contains --------------------------------------------------------------------


@dataclass
class Subject:
    """Something in the image that has a lifecycle: a product, its version, where it was seen."""

    product: str
    version: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    more: int = 0  # sources beyond MAX_SOURCES

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"product": self.product, "version": self.version, "from": self.sources}
        if self.more:
            d["more"] = self.more
        return d


def _upstream(version: str) -> str:
    """``1:3.11.2-6+deb12u1`` -> ``3.11.2``: no epoch, no ``v``, the leading dotted numbers."""
    v = version.strip()
    if re.match(r"\d+:", v):
        v = v.split(":", 1)[1]
    v = v.removeprefix("v").removeprefix("go")
    m = re.match(r"\d+(?:\.\d+)*", v)
    return m.group(0) if m else v


def java_version(raw: str) -> str:
    """Java's many spellings to ``major[.minor.patch]``: ``1.8.0_392``, ``jdk8u402-b06``,
    ``jdk-17.0.10+7``, ``21-ea`` -> ``8``, ``8``, ``17.0.10``, ``21``."""
    v = raw.strip().removeprefix("jdk-").removeprefix("jdk").removeprefix("openjdk-")
    m = re.match(r"(\d+)u\d+", v)
    if m:
        return m.group(1)
    v = _upstream(v)
    if v.startswith("1.") and len(v.split(".")) >= 2:
        return v.split(".")[1]
    return v


def _os_package_subject(name: str, version: str) -> tuple[str, str] | None:
    for pattern, product in _OS_RULES:
        m = pattern.match(name)
        if m:
            named = m.groupdict().get("v")
            return product, (java_version(named) if product in JAVA_PRODUCTS else named) if named else version
    return None


class _Found:
    """Subjects keyed by (product, version), each with a bounded list of sources."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Subject] = {}

    def add(self, product: str, version: str, source: dict[str, Any]) -> None:
        version = java_version(version) if product in JAVA_PRODUCTS else _upstream(version)
        if not version:
            return
        s = self.items.setdefault((product, version), Subject(product, version))
        if source in s.sources:
            return
        if len(s.sources) < MAX_SOURCES:
            s.sources.append(source)
        else:
            s.more += 1

    def result(self) -> list[Subject]:
        return sorted(self.items.values(), key=lambda s: (_KIND_ORDER[PRODUCTS[s.product]], s.product, s.version))


def subjects(inventory: IndexResult, env: Mapping[str, str] | None = None) -> list[Subject]:
    """Everything in the image with a lifecycle: OS release, OS packages, language packages,
    Go toolchains, Python library folders and the official images' version variables."""
    found = _Found()
    d = inventory.distro
    if d is not None:
        product = DISTROS.get(d.id)
        if d.id == "centos" and "stream" in (d.pretty_name or "").lower():
            product = "centos-stream"
        if product is not None:
            found.add(
                product,
                d.version_id or d.codename or "",
                {"type": "os-release", "id": d.id, "version_id": d.version_id, "codename": d.codename},
            )
    red_hat = d is not None and d.id in RED_HAT_LIKE
    for p in inventory.packages:
        if p.type == "os":
            hit = _os_package_subject(p.name, p.version)
            if hit is not None:
                product, version = hit
                if product == "red-hat-build-of-openjdk" and not red_hat:
                    product = "eclipse-temurin"  # an OpenJDK rpm of a distribution other than Red Hat's
                found.add(
                    product,
                    version,
                    {"type": "package", "ecosystem": p.ecosystem, "name": p.name, "version": p.version},
                )
            continue
        if p.ecosystem == "Go" and p.type == "stdlib":
            found.add("go", p.version, {"type": "go-binary", "version": p.version, "path": _first(p.paths)})
            continue
        product = _LANGUAGE_PACKAGES.get((p.ecosystem, p.name.lower() if p.ecosystem == "PyPI" else p.name))
        if product is not None:
            found.add(
                product,
                p.version,
                {
                    "type": "package",
                    "ecosystem": p.ecosystem,
                    "name": p.name,
                    "version": p.version,
                    "path": _first(p.paths),
                },
            )
        if p.ecosystem == "PyPI":
            for path in p.paths:
                m = _SITE_PACKAGES.search(path)
                if m:
                    folder = path[: m.end()].rstrip("/")
                    found.add("python", m.group(1), {"type": "python-library-folder", "path": folder})
    for var, value in (env or {}).items():
        product = ENV_VARS.get(var)
        if product is not None and value:
            found.add(product, value, {"type": "image-env", "name": var, "value": value[:100]})
    return found.result()


def _first(paths: Sequence[str]) -> str | None:
    return paths[0] if paths else None


def image_env(config: bytes | Mapping[str, Any] | None) -> dict[str, str]:
    """The ``Env`` of an image config (``KEY=value`` strings) as a dict; {} when unreadable."""
    if config is None:
        return {}
    try:
        doc = orjson.loads(config) if isinstance(config, bytes | bytearray) else config
    except orjson.JSONDecodeError:
        return {}
    cfg = doc.get("config") if isinstance(doc, Mapping) else None
    env = cfg.get("Env") if isinstance(cfg, Mapping) else None
    out: dict[str, str] = {}
    for item in env if isinstance(env, list) else []:
        if isinstance(item, str) and "=" in item:
            k, _, v = item.partition("=")
            out[k] = v
    return out


# -- matching and status --------------------------------------------------------------------------


def find_cycle(product: Product, version: str) -> Cycle | None:
    """The cycle named by the longest dotted prefix of ``version`` (``3.11.2`` -> ``3.11``), or by
    codename (``bookworm``, ``jammy``) for an OS release without a version number."""
    parts = version.split(".")
    for n in range(len(parts), 0, -1):
        hit = product.cycle(".".join(parts[:n]))
        if hit is not None:
            return hit
    word = version.strip().lower()
    if word:
        for c in product.cycles:
            if c.codename and c.codename.lower().split()[0] == word:
                return c
    return None


def status(eol: dt.date | bool, today: dt.date, soon_days: int) -> str:
    """``eol`` from the end-of-life day on, ``eol_soon`` at most ``soon_days`` before it."""
    if eol is True:
        return "eol"
    if eol is False:
        return "supported"
    left = (eol - today).days
    if left <= 0:
        return "eol"
    return "eol_soon" if left <= soon_days else "supported"


def _iso(value: dt.date | bool) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else None


def _entry(product: Product, cycle: Cycle, subject: Subject) -> dict[str, Any]:
    return {
        "product": product.name,
        "title": product.title,
        "kind": PRODUCTS[product.name],
        "cycle": cycle.cycle,
        "codename": cycle.codename,
        "versions": [subject.version],
        "release_date": cycle.release_date.isoformat() if cycle.release_date else None,
        "eol": _iso(cycle.eol),  # null: no date published; eol_reached then says whether it ended
        "eol_reached": cycle.eol is True,
        "extended_support": _iso(cycle.extended_support),
        "support": _iso(cycle.support),
        "lts": cycle.lts,
        "latest": cycle.latest,
        "from": list(subject.sources),
        "more": subject.more,
    }


def evaluate(
    found: Sequence[Subject] | Sequence[Mapping[str, Any]],
    products: Mapping[str, Product] | None,
    today: dt.date,
    soon_days: int,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored lifecycle document: one entry per matched product cycle, what matched nothing,
    and the subjects themselves (for recomputing without the inventory)."""
    subs = [s if isinstance(s, Subject) else _subject(s) for s in found]
    doc: dict[str, Any] = {
        "rules": RULES,
        "subjects": [s.as_dict() for s in subs],
        "data": dict(data) if data else None,
        "entries": [],
        "unmatched": [],
    }
    if products is None:
        doc["note"] = "no end-of-life data loaded: run `hallmark db update`"
        doc["unmatched"] = [{**s.as_dict(), "reason": "no end-of-life data loaded"} for s in subs]
        return _with_status(doc, today, soon_days)
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for s in subs:
        product = products.get(s.product)
        cycle = find_cycle(product, s.version) if product is not None else None
        if product is None or cycle is None:
            why = "no data for this product" if product is None else f"no release cycle of {s.version}"
            doc["unmatched"].append({**s.as_dict(), "reason": why})
            continue
        key = (product.name, cycle.cycle)
        if key in entries:
            e = entries[key]
            e["versions"] = sorted({*e["versions"], s.version})
            room = MAX_SOURCES - len(e["from"])
            e["from"] += s.sources[: max(room, 0)]
            e["more"] += s.more + max(len(s.sources) - max(room, 0), 0)
        else:
            entries[key] = _entry(product, cycle, s)
    doc["entries"] = list(entries.values())
    return _with_status(doc, today, soon_days)


def _subject(d: Mapping[str, Any]) -> Subject:
    return Subject(str(d["product"]), str(d["version"]), list(d.get("from") or []), int(d.get("more") or 0))


def _with_status(doc: dict[str, Any], today: dt.date, soon_days: int, days_left: bool = False) -> dict[str, Any]:
    """Statuses as of ``today``; ``days_left`` only for display (stored, it would change daily)."""
    worst = -1
    for e in doc["entries"]:
        eol: dt.date | bool = dt.date.fromisoformat(e["eol"]) if e.get("eol") else bool(e.get("eol_reached"))
        e["status"] = status(eol, today, soon_days)
        e["eol_reached"] = e["status"] == "eol"
        if days_left:
            e["days_left"] = (eol - today).days if isinstance(eol, dt.date) else None
        worst = max(worst, STATUSES.index(e["status"]))
    doc["status"] = STATUSES[worst] if worst >= 0 else None
    doc["os"] = next((e["product"] + " " + e["cycle"] for e in doc["entries"] if e["kind"] == "os"), None)
    doc["checked_on"] = today.isoformat()
    doc["eol_soon_days"] = soon_days
    return doc


def view(stored: Mapping[str, Any] | None, today: dt.date | None = None, soon_days: int = 90) -> dict[str, Any] | None:
    """The ``lifecycle`` object of the image document: the stored one with every status as of
    ``today`` (status moves with time), without the internal subjects."""
    if not stored:
        return None
    doc = {k: v for k, v in stored.items() if k not in ("subjects", "rules")}
    doc["entries"] = [dict(e) for e in stored.get("entries") or []]
    return _with_status(doc, today or utc_today(), soon_days, days_left=True)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _comparable(doc: Mapping[str, Any]) -> bytes:
    """What a stored document says, less the day it was checked and the set that carried the data."""
    d = {k: v for k, v in doc.items() if k != "checked_on"}
    if isinstance(d.get("data"), dict):
        d["data"] = {k: v for k, v in d["data"].items() if k != "set"}
    return orjson.dumps(d, option=orjson.OPT_SORT_KEYS)


# -- storing ----------------------------------------------------------------------------------------


def _set_info(meta: Mapping[str, Any]) -> dict[str, Any]:
    eol = meta["sources"].get("endoflife") or {}
    return {"source": SOURCE, "set": meta["id"], "digest": eol.get("digest")}


def _image_env(pipeline: Pipeline, repo: str, digest: str) -> dict[str, str]:
    rec = pipeline.meta.get_manifest(repo, digest, True)
    if rec is None:
        return {}
    try:
        config = (orjson.loads(rec.content).get("config") or {}).get("digest")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(config, str) or (pipeline.blobs.stat(config) or 0) > 8 << 20:
        return {}
    try:
        with pipeline.blobs.open(config) as f:
            return image_env(f.read(8 << 20))
    except (OSError, KeyError):
        return {}


def detect(pipeline: Pipeline, repo: str, digest: str, inventory: IndexResult | None = None) -> list[Subject] | None:
    """The subjects of one stored image (inventory and image config); None when not indexed."""
    inv = inventory or pipeline.inventory(digest)
    if inv is None:
        return None
    return subjects(inv, _image_env(pipeline, repo, digest))


def refresh_image(pipeline: Pipeline, repo: str, digest: str, today: dt.date | None = None) -> dict[str, Any] | None:
    """Find and match one image and store ``images.lifecycle`` (after indexing and matching)."""
    found = detect(pipeline, repo, digest)
    if found is None:
        return None
    active = active_products(pipeline)
    doc = evaluate(
        found,
        active[1] if active else None,
        today or utc_today(),
        pipeline.config.lifecycle.eol_soon_days,
        _set_info(active[0]) if active else None,
    )
    store_many(pipeline.meta, [(repo, digest, doc)])
    return doc


def store_many(meta: MetadataStore, items: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Write many lifecycle documents in one transaction (never creates an image row)."""
    if not items:
        return
    now = utcnow()
    with meta.transaction() as conn:
        for repo, digest, doc in items:
            conn.execute(
                update(images)
                .where(images.c.repo_name == repo, images.c.digest == digest)
                .values(lifecycle=orjson.dumps(doc).decode(), updated_at=now)
            )


def refresh_all(pipeline: Pipeline, today: dt.date | None = None, batch: int = 500) -> dict[str, int]:
    """Recompute every indexed image's lifecycle (new EOL data, a new day, a changed window).

    Reads the stored subjects; an image stored before them (or under older matching rules) is
    found again from its stored inventory and image config, never its layers. Only documents
    that changed are written, one transaction per batch.
    """
    today = today or utc_today()
    soon = pipeline.config.lifecycle.eol_soon_days
    active = active_products(pipeline)
    products, info = (active[1], _set_info(active[0])) if active else (None, None)
    stats = {"images": 0, "changed": 0, "eol": 0, "eol_soon": 0, "not_indexed": 0}
    q = select(images.c.repo_name, images.c.digest).where(images.c.status.in_(["indexed", "scanning", "done"]))
    with pipeline.meta.engine.connect() as conn:
        keys = [(r[0], r[1]) for r in conn.execute(q)]  # the documents themselves are read per batch
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        stored: dict[tuple[str, str], Any] = dict.fromkeys(part)
        with pipeline.meta.engine.connect() as conn:
            for repo_name, digest_, raw in conn.execute(
                select(images.c.repo_name, images.c.digest, images.c.lifecycle).where(
                    tuple_(images.c.repo_name, images.c.digest).in_(part)
                )
            ):
                stored[(repo_name, digest_)] = orjson.loads(raw) if raw else None
        stale = [d for (r, d), doc in stored.items() if not doc or doc.get("rules") != RULES]
        inventories = pipeline.cache.get_many("image", INDEXER_VERSION, stale) if stale else {}
        writes = []
        for (repo, digest), old in stored.items():
            stats["images"] += 1
            if old and old.get("rules") == RULES:
                found: Sequence[Any] = old.get("subjects") or []
            else:
                inv = inventories.get(digest)
                if inv is None:
                    stats["not_indexed"] += 1
                    continue
                found = subjects(IndexResult.from_json(inv), _image_env(pipeline, repo, digest))
            doc = evaluate(found, products, today, soon, info)
            if doc["status"] in ("eol", "eol_soon"):
                stats[doc["status"]] += 1
            if old is None or _comparable(old) != _comparable(doc):
                writes.append((repo, digest, doc))
        store_many(pipeline.meta, writes)
        stats["changed"] += len(writes)
    return stats


def lifecycle_of(meta: MetadataStore, repo: str, digest: str) -> dict[str, Any] | None:
    """The stored document of one image (None when not computed)."""
    with meta.engine.connect() as conn:
        raw = conn.execute(
            select(images.c.lifecycle).where(images.c.repo_name == repo, images.c.digest == digest)
        ).scalar()
    return orjson.loads(raw) if raw else None
