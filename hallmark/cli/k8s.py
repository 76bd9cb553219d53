"""``hallmark k8s report``: send a cluster's inventory (what runs where) to a Hallmark server.

The inventory is the document ``kubectl get pods,deployments,replicasets,statefulsets,
daemonsets,jobs,cronjobs,services,ingresses -A -o json`` prints: read from a file (``-`` is
stdin) or collected with the official ``kubernetes`` client (kubeconfig or in-cluster service
account), then posted to ``POST /api/v1/clusters/{cluster}/inventory``. The client's lists are
read as the API server's own JSON (no typed models in between: camelCase fields as kubectl
prints them, nothing dropped by an older model), paged with ``limit``/``continue``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

k8s_app = typer.Typer(no_args_is_help=True, help="Kubernetes inventories: which workloads run which images.")

# (group/version, resource, kind) in the order `kubectl get pods,deployments,... -A` lists them.
RESOURCES: list[tuple[str, str, str]] = [
    ("v1", "pods", "Pod"),
    ("apps/v1", "deployments", "Deployment"),
    ("apps/v1", "replicasets", "ReplicaSet"),
    ("apps/v1", "statefulsets", "StatefulSet"),
    ("apps/v1", "daemonsets", "DaemonSet"),
    ("batch/v1", "jobs", "Job"),
    ("batch/v1", "cronjobs", "CronJob"),
    ("v1", "services", "Service"),
    ("networking.k8s.io/v1", "ingresses", "Ingress"),
]
PAGE = 500
_CLUSTER_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")


class ReportError(Exception):
    """One line for the user; the command exits 2."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _trim(item: dict[str, Any]) -> dict[str, Any]:
    """Drop what the inventory never reads and can be large (managedFields, last-applied annotations).

    Services keep their annotations: cloud providers mark internal load balancers there.
    """
    meta = item.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        if item.get("kind") != "Service":
            meta.pop("annotations", None)
    return item


def collect(kubeconfig: str | None, context: str | None, in_cluster: bool) -> dict[str, Any]:
    """Every object of the inventory kinds in all namespaces, as one kubectl-shaped ``List``."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        if in_cluster:
            config.load_incluster_config()
            api = client.ApiClient()
        else:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError, ValueError) as exc:
        where = "in-cluster service account" if in_cluster else (kubeconfig or "the default kubeconfig")
        raise ReportError(f"cannot load Kubernetes credentials from {where}: {exc}") from None
    apis = {
        "v1": client.CoreV1Api(api),
        "apps/v1": client.AppsV1Api(api),
        "batch/v1": client.BatchV1Api(api),
        "networking.k8s.io/v1": client.NetworkingV1Api(api),
    }
    items: list[dict[str, Any]] = []
    resource = ""
    try:
        for group, resource, kind in RESOURCES:
            method = getattr(apis[group], f"list_{_snake(kind)}_for_all_namespaces")
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False, "_request_timeout": 120}
                if token:
                    kwargs["_continue"] = token
                resp = method(**kwargs)
                try:
                    page = orjson.loads(resp.data)
                except orjson.JSONDecodeError:
                    raise ReportError(f"listing {resource}: the API server did not answer JSON") from None
                for item in page.get("items") or []:
                    # List items carry no apiVersion/kind; kubectl fills them in, so does this.
                    items.append(_trim({"apiVersion": group, "kind": kind, **item}))
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    break
    except ApiException as exc:
        reason = (exc.reason or "").strip() or "error"
        raise ReportError(f"listing {resource} in all namespaces: {exc.status} {reason}") from None
    except ReportError:
        raise
    except Exception as exc:  # urllib3 connection and TLS errors, after the client's retries
        raise ReportError(f"listing {resource}: cannot reach the API server ({type(exc).__name__}: {exc})") from None
    finally:
        api.close()
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _read_file(path: str) -> tuple[bytes, dt.datetime]:
    """The file's bytes and when it was written (stdin: now)."""
    if path == "-":
        return sys.stdin.buffer.read(), dt.datetime.now(dt.UTC)
    p = Path(path)
    try:
        return p.read_bytes(), dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC)
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None


def _auth(token: str | None, username: str | None, password_stdin: bool) -> dict[str, Any]:
    if token and username:
        raise ReportError("give either --token (or HALLMARK_TOKEN) or --username, not both")
    if username:
        password = sys.stdin.readline().rstrip("\n") if password_stdin else ""
        return {"auth": (username, password)}
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    return {}


def post(
    server: str,
    cluster: str,
    body: bytes,
    taken_at: dt.datetime,
    auth: dict[str, Any],
    ca_file: str | None = None,
) -> dict[str, Any]:
    """POST the inventory (gzip) and return the server's answer; errors as ReportError."""
    import httpx  # here, not at import: `hallmark --help` imports every command module

    url = server.rstrip("/") + f"/api/v1/clusters/{cluster}/inventory"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **auth.get("headers", {})}
    params = {"taken_at": taken_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")}
    verify: Any = ca_file if ca_file else True
    try:
        resp = httpx.post(
            url,
            content=gzip.compress(body, 6),
            headers=headers,
            params=params,
            auth=auth.get("auth"),
            timeout=300,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        raise ReportError(f"cannot reach {server}: {exc}") from None
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if resp.status_code != 200:
        message = (doc or {}).get("error", {}).get("message") if isinstance(doc, dict) else None
        raise ReportError(f"{server} answered {resp.status_code}: {message or resp.text[:200].strip()}")
    if not isinstance(doc, dict):
        raise ReportError(f"{server} answered something else than JSON")
    return doc


def _summary(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"cluster {doc.get('cluster')}: {doc.get('workloads', 0)} workloads ({doc.get('exposed', 0)} exposed), "
        f"{doc.get('images', 0)} images, {len(doc.get('unresolved', []))} unresolved, "
        f"{len(doc.get('skipped', []))} skipped; inventory taken at {doc.get('inventory_at')}"
    ]
    for s in doc.get("skipped", []):
        lines.append(f"skipped {s.get('kind')} {s.get('namespace')}/{s.get('name')}: {s.get('reason')}")
    for u in doc.get("unresolved", []):
        lines.append(
            f"unresolved {u.get('kind')} {u.get('namespace')}/{u.get('name')} {u.get('container')}: {u.get('reason')}"
        )
    return lines


@k8s_app.command("report")
def report(
    cluster: Annotated[str, typer.Option("--cluster", help="Name of the cluster in Hallmark (lowercase).")],
    server: Annotated[
        str, typer.Option("--server", envvar="HALLMARK_SERVER", help="Hallmark base URL, e.g. https://hallmark.example")
    ],
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config).")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context (default: current).")] = None,
    in_cluster: Annotated[bool, typer.Option("--in-cluster", help="Use the pod's service account.")] = False,
    file: Annotated[
        str | None, typer.Option("--file", help="kubectl get ... -A -o json output instead of listing ('-' = stdin).")
    ] = None,
    taken_at: Annotated[
        str | None,
        typer.Option("--taken-at", help="When the inventory was taken (RFC 3339); default: now, or the file's time."),
    ] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="HALLMARK_TOKEN", help="API token (hmk_...).")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="User for Basic auth.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    ca_file: Annotated[str | None, typer.Option("--ca-file", help="CA bundle for an https server.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON.")] = False,
) -> None:
    """Collect (or read) a cluster's inventory and post it to Hallmark; it replaces the previous one."""
    try:
        if not _CLUSTER_RE.match(cluster):
            raise ReportError(f"invalid cluster name {cluster!r} (lowercase letters, digits, '.', '_', '-')")
        if sum(bool(x) for x in (kubeconfig or context, in_cluster, file)) > 1:
            raise ReportError("give one source: --kubeconfig/--context, --in-cluster or --file")
        if file == "-" and password_stdin:
            raise ReportError("--file - and --password-stdin both read stdin; use --token or a file")
        when: dt.datetime | None = None
        if taken_at:
            try:
                when = dt.datetime.fromisoformat(taken_at)
            except ValueError:
                raise ReportError(f"--taken-at {taken_at!r} is not an RFC 3339 time") from None
            if when.tzinfo is None:
                raise ReportError("--taken-at needs a time zone offset, e.g. 2026-12-05T19:00:00Z")
        auth = _auth(token, username, password_stdin)
        if file:
            body, file_time = _read_file(file)
            when = when or file_time
        else:
            started = dt.datetime.now(dt.UTC)  # the snapshot is at least this new
            body = orjson.dumps(collect(kubeconfig, context, in_cluster))
            when = when or started
        doc = post(server, cluster, body, when, auth, ca_file)
    except ReportError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in _summary(doc):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(k8s_app, name="k8s")
