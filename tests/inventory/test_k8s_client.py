"""``hallmark k8s report --kubeconfig``: the official kubernetes client lists a (tiny, local) API server
over HTTP, pages with limit/continue, and what it posts equals what kubectl would have printed."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import Server
from tests.inventory.helpers import kubectl_list
from tests.inventory.test_api import post, rows, workloads

TOKEN = "kube-token-for-tests"
PATHS = {
    "Pod": "/api/v1/pods",
    "Deployment": "/apis/apps/v1/deployments",
    "ReplicaSet": "/apis/apps/v1/replicasets",
    "StatefulSet": "/apis/apps/v1/statefulsets",
    "DaemonSet": "/apis/apps/v1/daemonsets",
    "Job": "/apis/batch/v1/jobs",
    "CronJob": "/apis/batch/v1/cronjobs",
    "Service": "/api/v1/services",
    "Ingress": "/apis/networking.k8s.io/v1/ingresses",
}
PAGE = 3  # the API server may answer fewer items than asked for, with a continue token


class FakeApiServer:
    """Answers the list endpoints like kube-apiserver: `<Kind>List`, items without apiVersion/kind."""

    def __init__(self, doc: dict[str, Any], deny: str | None = None) -> None:
        self.by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in PATHS}
        for item in doc["items"]:
            self.by_kind[item["kind"]].append({k: v for k, v in item.items() if k not in ("apiVersion", "kind")})
        self.deny = deny
        self.requests: list[tuple[str, dict[str, str], str | None]] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _list(self, kind: str, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query), request.headers.get("Authorization")))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"kind": "Status", "status": "Failure", "code": 401}, status=401)
        if kind == self.deny:
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
            return web.json_response(body, status=403, reason="Forbidden")
        start = int(request.query.get("continue") or 0)
        items = self.by_kind[kind][start : start + PAGE]
        meta: dict[str, Any] = {"resourceVersion": "982734"}
        if start + PAGE < len(self.by_kind[kind]):
            meta["continue"] = str(start + PAGE)
        return web.json_response({"kind": kind + "List", "apiVersion": "v1", "metadata": meta, "items": items})

    def _run(self) -> None:
        async def main() -> None:
            app = web.Application()
            for kind, path in PATHS.items():
                app.router.add_get(path, functools.partial(self._list, kind))
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def __enter__(self) -> FakeApiServer:
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "reporter", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "reporter"}}],
                    "current-context": "test",
                }
            )
        )
        return path


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallmark", "k8s", "report", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def kubectl_doc(server: Server) -> dict[str, Any]:
    return kubectl_list(server.host)


def test_report_with_kubeconfig_equals_kubectl_output(
    client: httpx.Client, server: Server, tmp_path: Path, kubectl_doc: dict[str, Any], pushed: dict[str, str]
) -> None:
    assert post(client, "from-kubectl", kubectl_doc).status_code == 200
    with FakeApiServer(kubectl_doc) as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        r = _report("--cluster", "from-client", "--server", server.url, "--kubeconfig", str(kc))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cluster from-client: 7 workloads (4 exposed), 9 images, 0 unresolved, 0 skipped")
    # every kind listed across all namespaces, with the kubeconfig's token, paged with continue
    paths = [p for p, _, _ in api.requests]
    assert sorted(set(paths)) == sorted(PATHS.values())
    assert paths.count("/api/v1/pods") == 3  # 7 pods, 3 per page
    assert {a for _, _, a in api.requests} == {f"Bearer {TOKEN}"}
    assert all(q.get("limit") == "500" for _, q, _ in api.requests)
    got = workloads(client, "from-client")
    want = workloads(client, "from-kubectl")
    assert rows(got) == rows(want)
    assert [(w["name"], w["exposure"]) for w in got] == [(w["name"], w["exposure"]) for w in want]


def test_report_api_errors_are_one_line(server: Server, tmp_path: Path, kubectl_doc: dict[str, Any]) -> None:
    with FakeApiServer(kubectl_doc, deny="CronJob") as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        r = _report("--cluster", "denied", "--server", server.url, "--kubeconfig", str(kc))
    assert r.returncode == 2
    assert r.stderr.strip() == "error: listing cronjobs in all namespaces: 403 Forbidden"
    # nothing was posted: the cluster has no inventory
    assert httpx.get(server.url + "/api/v1/clusters/denied/workloads").status_code == 404
    kc.write_text(kc.read_text().replace(str(api.port), "9"))  # nothing listens there
    r = _report("--cluster", "denied", "--server", server.url, "--kubeconfig", str(kc))
    assert r.returncode == 2 and "cannot reach the API server" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
