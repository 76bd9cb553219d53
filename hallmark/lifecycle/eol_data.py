"""endoflife.date product data: which products Hallmark matches, the two layouts it reads, and
the import record of ``hallmark db update`` (which fetches ``FOLDER/<product>.json`` into the
advisory set, :mod:`hallmark.pipeline.advisory_sets`). Matching is :mod:`hallmark.lifecycle.eol`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from hallmark.pipeline.service import Pipeline

SOURCE = "endoflife.date"
FOLDER = "endoflife/products"  # inside an advisory set folder, as in shared/data

#: Every product Hallmark matches, and its kind (the order of the lifecycle table).
PRODUCTS: dict[str, str] = {
    # base OS releases
    "debian": "os",
    "ubuntu": "os",
    "alpine-linux": "os",
    "rhel": "os",
    "centos": "os",
    "centos-stream": "os",
    "rocky-linux": "os",
    "almalinux": "os",
    "oracle-linux": "os",
    "amazon-linux": "os",
    "fedora": "os",
    "opensuse": "os",
    "sles": "os",
    "vmware-photon": "os",
    # language runtimes
    "python": "runtime",
    "nodejs": "runtime",
    "go": "runtime",
    "ruby": "runtime",
    "php": "runtime",
    "dotnet": "runtime",
    "eclipse-temurin": "runtime",
    "red-hat-build-of-openjdk": "runtime",
    "amazon-corretto": "runtime",
    "microsoft-build-of-openjdk": "runtime",
    # frameworks
    "django": "framework",
    "spring-boot": "framework",
    "spring-framework": "framework",
    "ruby-on-rails": "framework",
    "laravel": "framework",
    "symfony": "framework",
    "express": "framework",
    # servers
    "tomcat": "server",
    "nginx": "server",
    "apache-http-server": "server",
    "postgresql": "server",
    "redis": "server",
    "mariadb": "server",
    "mysql": "server",
    "mongodb": "server",
}

class EolDataError(ValueError):
    """A product file that is not endoflife.date data in a known layout."""


# -- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """One release cycle. ``eol``/``extended_support``: a date, True (ended, no date) or False."""

    cycle: str
    eol: dt.date | bool
    extended_support: dt.date | bool = False
    support: dt.date | bool = False  # end of active support (bug fixes), where the product has one
    codename: str | None = None
    release_date: dt.date | None = None
    lts: bool = False
    latest: str | None = None


@dataclass(frozen=True)
class Product:
    name: str
    title: str
    cycles: tuple[Cycle, ...]

    def cycle(self, name: str) -> Cycle | None:
        return next((c for c in self.cycles if c.cycle == name), None)


def _date_or_flag(value: Any, where: str) -> dt.date | bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise EolDataError(f"{where}: expected a date or true/false, got {value!r}")


def _date(value: Any) -> dt.date | None:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def normalise(product: str, doc: Any) -> Product:
    """One product file, in the repository's layout or the API's, as a :class:`Product`."""
    title = product
    if isinstance(doc, dict) and isinstance(doc.get("result"), dict):  # API v1 /products/<name>
        result = doc["result"]
        title = str(result.get("label") or product)
        rows = [
            {
                "cycle": r.get("name"),
                "eol": r.get("eolFrom") or bool(r.get("isEol")),
                "extendedSupport": r.get("eoesFrom") or bool(r.get("isEoes")),
                "support": r.get("eoasFrom") or bool(r.get("isEoas")),
                "codename": r.get("codename"),
                "releaseDate": r.get("releaseDate"),
                "lts": r.get("isLts"),
                "latest": (r.get("latest") or {}).get("name") if isinstance(r.get("latest"), dict) else None,
            }
            for r in result.get("releases") or []
            if isinstance(r, dict)
        ]
    elif isinstance(doc, dict) and isinstance(doc.get("releases"), list):  # repository front matter
        title = str(doc.get("title") or product)
        rows = [
            {
                "cycle": r.get("releaseCycle"),
                "eol": r.get("eol"),
                "extendedSupport": r.get("eoes"),
                "support": r.get("eoas"),
                "codename": r.get("codename"),
                "releaseDate": r.get("releaseDate"),
                "lts": r.get("lts"),
                "latest": r.get("latest"),
            }
            for r in doc["releases"]
            if isinstance(r, dict)
        ]
    elif isinstance(doc, list):  # API /<product>.json
        rows = [r for r in doc if isinstance(r, dict)]
    else:
        raise EolDataError(f"{product}: neither the endoflife.date repository layout nor its API")
    cycles = []
    for r in rows:
        name = _text(r.get("cycle"))
        if not name:
            raise EolDataError(f"{product}: a release without a cycle name")
        where = f"{product} {name}"
        cycles.append(
            Cycle(
                cycle=name,
                eol=_date_or_flag(r.get("eol"), f"{where} eol"),
                extended_support=_date_or_flag(r.get("extendedSupport"), f"{where} extended support"),
                support=_date_or_flag(r.get("support"), f"{where} support"),
                codename=_text(r.get("codename")),
                release_date=_date(r.get("releaseDate")),
                lts=bool(r.get("lts")),
                latest=_text(r.get("latest")),
            )
        )
    return Product(product, title, tuple(cycles))


def load_products(root: str | Path) -> dict[str, Product]:
    """Every product of :data:`PRODUCTS` found under ``root/endoflife/products`` (an advisory set
    folder, or ``shared/data``); raises :class:`EolDataError` naming the first bad file."""
    folder = Path(root) / FOLDER
    out: dict[str, Product] = {}
    for name in PRODUCTS:
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise EolDataError(f"{path.name}: not JSON ({exc})") from exc
        out[name] = normalise(name, doc)
    return out


def feed_files() -> list[str]:
    """The product files of a set, relative to the set folder (the same paths in a mirror)."""
    return [f"{FOLDER}/{name}.json" for name in PRODUCTS]


def feed_url(base_url: str, path: str) -> str:
    """The live API's URL of one product file."""
    return f"{base_url.rstrip('/')}/{Path(path).name}"


def data_digest(files: Iterable[Mapping[str, Any]]) -> str | None:
    """What identifies the EOL data of a set: its product files' hashes (None without any)."""
    items = sorted(
        (str(f["path"]), str(f["sha256"]))
        for f in files
        if str(f.get("path", "")).startswith(FOLDER) and f.get("sha256")
    )
    if not items:
        return None
    return "sha256:" + hashlib.sha256(repr(items).encode()).hexdigest()


def import_record(products: Mapping[str, Product], files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``endoflife`` part of a set's sources record."""
    return {
        "source": SOURCE,
        "products": sorted(products),
        "cycles": sum(len(p.cycles) for p in products.values()),
        "digest": data_digest(files),
    }


_cache_lock = threading.Lock()
_cache: dict[str, tuple[int, dict[str, Product]]] = {}


def active_products(pipeline: Pipeline) -> tuple[dict[str, Any], dict[str, Product]] | None:
    """The active set's record and its products, loaded once per process and set; None when the
    active set has no EOL data (or there is no set)."""
    meta = pipeline.store.active_advisory_set()
    if meta is None or not (meta["sources"].get("endoflife") or {}).get("products"):
        return None
    key = str(pipeline.config.data_path)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != meta["id"]:
            from hallmark.pipeline.shared_sets import ensure_set  # fetched when another replica imported it

            folder = ensure_set(pipeline.config, pipeline.blobs, meta)
            _cache[key] = (meta["id"], load_products(folder))
            hit = _cache[key]
    return meta, hit[1]
