"""``make bench``: run every benchmark (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "registry",
    "sbom",
    "advisories",
    "content_checks",
    "explore",
    "admission",
    "scan_speed",
    "search",
    "portal",
    "s3",
    "workers",
    "mirror_sync",
    "proxy",
]


def main() -> None:
    names = sys.argv[1:] or BENCHES
    for name in names:
        print(f"\n=== bench/{name}.py ===", flush=True)
        importlib.import_module(f"bench.{name}").main([])


if __name__ == "__main__":
    main()
