"""A real S3 protocol server for tests: moto's standalone server, run as its own process.

Why not Ceph's radosgw from Debian: Debian 12 ships Ceph 16 (Pacific), whose radosgw only
stores into a RADOS cluster; bringing one up means a monitor, a manager and at least one
OSD with its own keyring and data store (minutes, hundreds of MB of packages, root-only
paths). The cluster-less "dbstore" backend arrived later (Ceph 17+, experimental). moto's
server speaks the S3 wire protocol over HTTP (SigV4, multipart uploads, presigned URLs)
in a separate process, so the code under test talks to it exactly as to a real endpoint:
no in-process mocking.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ACCESS_KEY = "hallmark-test"
SECRET_KEY = "hallmark-test-secret"


class MotoServer:
    def __init__(self, port: int, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.extra_env = env or {}  # e.g. INITIAL_NO_AUTH_ACTION_COUNT=0: moto checks credentials
        self.log_path = log_dir / f"moto-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        log = open(self.log_path, "ab")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.endpoint + "/moto-api/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"hm-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, redirect: bool = False) -> dict[str, str]:
        """Environment for a ``hallmark serve`` storing its blobs in ``bucket``."""
        return {
            "HALLMARK_STORAGE__DRIVER": "s3",
            "HALLMARK_STORAGE__BUCKET": bucket,
            "HALLMARK_STORAGE__ENDPOINT": self.endpoint,
            "HALLMARK_STORAGE__REGION": "us-east-1",
            "HALLMARK_STORAGE__PATH_STYLE": "true",
            "HALLMARK_STORAGE__ACCESS_KEY": ACCESS_KEY,
            "HALLMARK_STORAGE__SECRET_KEY": SECRET_KEY,
            "HALLMARK_STORAGE__REDIRECT": "true" if redirect else "false",
        }


_SHARED: MotoServer | None = None


def shared_moto(log_dir: Path) -> MotoServer:
    """One moto server for the whole test process (buckets keep tests apart); stopped at exit."""
    global _SHARED
    if _SHARED is None or (_SHARED.proc is not None and _SHARED.proc.poll() is not None):
        from tests.conftest import free_port

        _SHARED = MotoServer(free_port(), log_dir).start()
        atexit.register(_SHARED.stop)
    return _SHARED
