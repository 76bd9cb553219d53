"""Limits against hostile images, the per-job budget, and the exception that marks an image "index failed: <reason>".

A hostile image must cost a bounded amount once: :class:`Limits` holds the bounds (per file,
per layer, per image, per job) and :class:`Budget` the running totals of one indexing job.
The budget is reachable from detectors through :func:`current_budget` (a context variable,
so each job thread sees its own) because detectors only ever get one file's bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


class IndexFailed(Exception):
    """The image cannot be indexed; ``reason`` is shown to users as ``index failed: <reason>``.

    ``layer`` is True when the failure depends on one layer's bytes alone (corrupt archive,
    bomb, a cap that layer exceeds by itself): the indexer then caches it by layer digest so
    the same hostile layer in another image fails at once instead of being read again.
    ``cache`` is False for failures that may not recur (a blob not matching its digest is a
    storage problem, not a property of the image).
    """

    def __init__(self, reason: str, layer: bool = True, cache: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.layer = layer
        self.cache = cache


class CapExceeded(IndexFailed):
    """A per-image cap or the job budget was hit: the image is failed, never reported as complete."""


class OutOfTime(CapExceeded):
    """The wall-clock budget ran out. Not ``final`` in a first short slice: the image is retried
    with the full budget in the large-job lane instead of failing."""

    def __init__(self, reason: str, layer: bool, final: bool) -> None:
        super().__init__(reason, layer=layer and final, cache=final)
        self.final = final


@dataclass(frozen=True)
class Limits:
    """Bounds on what one image may cost. Defaults fit real images (multi-GB layers, 200 MB jars).

    Exceeding a *layer*, *image* or *job* bound fails the image (it is hostile or broken). A
    single file over ``max_file_bytes`` is only skipped with a warning, and so is a single
    entry with an unusable name: one odd file must not hide every other package in the image.
    """

    max_file_bytes: int = 512 << 20  # bytes a detector may read from one file
    max_layer_bytes: int = 32 << 30  # uncompressed bytes in one layer
    max_entries_per_layer: int = 2_000_000
    max_ratio: float = 200.0  # uncompressed / compressed, checked once past bomb_floor
    bomb_floor: int = 64 << 20  # below this many uncompressed bytes the ratio is not checked
    max_symlink_hops: int = 40  # like Linux's MAXSYMLINKS
    max_nested_archive_depth: int = 4  # jar in war in ear ...
    max_path_length: int = 4096
    # per image (all layers together)
    max_entries_per_image: int = 4_000_000
    max_path_bytes_per_image: int = 512 << 20  # bytes of entry paths and link targets kept for the merge
    max_packages_per_image: int = 20_000  # found in all files of all layers (large real images: a few thousand)
    max_nested_archive_bytes: int = 2 << 30  # bytes of archives inside archives (jars in wars) opened in memory
    # per job
    max_job_seconds: float = 900.0  # wall clock for one image, all layers
    max_job_memory_bytes: int = 2 << 30  # memory the job's own data may hold (accounted, see Budget)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Limits:
        """Limits from a settings mapping (the ``[index]`` config section); other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# Rough bytes of memory per kept entry and per package, beyond their strings (tuples, dicts, objects).
ENTRY_OVERHEAD = 160
PACKAGE_OVERHEAD = 1200


@dataclass
class Budget:
    """What one indexing job has used so far; every charge checks the matching cap.

    Memory is *accounted*, not measured (a thread cannot see its own share of the process):
    the job charges what it keeps (entry paths, packages, nested archives while open, the file
    a detector is reading), which is where hostile images put their weight. Each charge also
    counts against the layer being read, so a failure can tell whether that layer alone was
    over the cap (then it is cached by layer digest) or the image as a whole.
    """

    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.monotonic
    seconds: float | None = None  # wall clock for this run (defaults to limits.max_job_seconds)
    final: bool = True  # False for a first short slice: running out of time then defers the job
    started: float = 0.0
    layer_started: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    layer_totals: dict[str, int] = field(default_factory=dict)
    memory: int = 0
    layer_memory: int = 0

    def __post_init__(self) -> None:
        if self.seconds is None:
            self.seconds = self.limits.max_job_seconds
        self.started = self.layer_started = self.clock()

    def start_layer(self) -> None:
        self.layer_totals = {}
        self.layer_memory = 0
        self.layer_started = self.clock()

    def check_time(self) -> None:
        now = self.clock()
        assert self.seconds is not None
        if now - self.started > self.seconds:
            # the layer is to blame only if it took (nearly) the whole budget by itself
            alone = now - self.layer_started >= 0.9 * self.seconds
            raise OutOfTime(f"job budget: indexing took longer than {self.seconds:g} seconds", alone, self.final)

    def charge(self, what: str, n: int, cap: int, label: str) -> None:
        """Add ``n`` to counter ``what``; over ``cap``: fail with ``label`` in the reason."""
        total = self.totals.get(what, 0) + n
        self.totals[what] = total
        mine = self.layer_totals.get(what, 0) + n
        self.layer_totals[what] = mine
        if total > cap:
            raise CapExceeded(f"image cap: more than {cap} {label}", layer=mine > cap)

    def hold(self, n: int) -> None:
        """Account ``n`` bytes of memory kept by the job (negative to release)."""
        self.memory += n
        self.layer_memory += n
        cap = self.limits.max_job_memory_bytes
        if self.memory > cap:
            raise CapExceeded(f"job budget: more than {cap} bytes of memory", layer=self.layer_memory > cap)

    @contextlib.contextmanager
    def holding(self, n: int) -> Iterator[None]:
        """Account ``n`` bytes for the duration of a block (a file being read, an open nested archive)."""
        self.hold(n)
        try:
            yield
        finally:
            self.memory -= n
            self.layer_memory -= n


_CURRENT: ContextVar[Budget | None] = ContextVar("hallmark_index_budget", default=None)


def current_budget() -> Budget | None:
    """The budget of the indexing job running in this thread, if any (detectors use it)."""
    return _CURRENT.get()


@contextlib.contextmanager
def active_budget(budget: Budget) -> Iterator[Budget]:
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def current_limits() -> Limits:
    """The limits of the indexing job running in this thread, else the defaults."""
    budget = _CURRENT.get()
    return budget.limits if budget is not None else _DEFAULT


_DEFAULT = Limits()
