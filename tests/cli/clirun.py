"""Run the real ``hallmark`` command in a subprocess, on one data folder, without the caller's HALLMARK_* settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def hallmark(
    data: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_")}
    clean.update({"HALLMARK_DATA_DIR": str(data), "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "hallmark", *args],
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
