"""``hallmark provenance attach REF --from-env`` (a CI step says what built an image) and ``show REF``.

REF is ``host/repo:tag`` or ``host/repo@digest`` on a Hallmark registry; a tag is resolved to its
digest first, so the metadata lands on exactly the image the pipeline pushed. Registry options
are those of ``hallmark sign``. Every error is one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import orjson
import typer

from hallmark.cli.signing import INSECURE_OPTION, PASSWORD_STDIN_OPTION, USERNAME_OPTION, registry_credentials

provenance_app = typer.Typer(no_args_is_help=True, help="Where images come from: source, commit, pipeline run.")

REF_HELP = "Image on a Hallmark registry: host/repo:tag or host/repo@digest."


class CliError(Exception):
    """One line for stderr."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _target(ref: str, insecure: bool, creds: tuple[str, str] | None) -> tuple[str, str, str]:
    """(API base URL, repository, digest) for REF, resolving a tag through the registry."""
    from hallmark.oci.registry import Reference
    from hallmark.oci.source import OciError
    from hallmark.signing.layout import LayoutError
    from hallmark.signing.registry import RegistryStore

    try:
        parsed = Reference.parse(ref)
    except OciError as exc:
        raise CliError(str(exc)) from exc
    if parsed.host == "registry-1.docker.io":
        raise CliError(f"{ref!r} names no Hallmark registry host (expected host[:port]/repository:tag or @digest)")
    digest = parsed.digest
    if digest is None:
        try:
            with RegistryStore(parsed.host, parsed.repository, insecure=insecure, credentials=creds) as store:
                digest = store.resolve(parsed.reference).digest
        except (LayoutError, OciError) as exc:
            raise CliError(f"cannot resolve {ref}: {exc}") from exc
    base = f"{'http' if insecure else 'https'}://{parsed.host}"
    return base, parsed.repository, digest


def _call(method: str, url: str, creds: tuple[str, str] | None, body: Any = None) -> dict[str, Any]:
    import httpx  # here, not at import: `hallmark --help` imports every command module

    try:
        resp = httpx.request(method, url, json=body, auth=creds, timeout=60)
    except httpx.HTTPError as exc:
        raise CliError(f"{url}: {exc}") from exc
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if resp.status_code >= 400:
        err = doc.get("error") if isinstance(doc, dict) else None
        message = err.get("message") if isinstance(err, dict) else resp.text[:200].strip()
        if resp.status_code == 401:
            message = f"{message or 'unauthorized'} (give -u USER --password-stdin, e.g. a robot token)"
        raise CliError(f"{method} {url}: {resp.status_code} {message}")
    if not isinstance(doc, dict):
        raise CliError(f"{method} {url}: the answer is not a JSON object")
    return doc


@provenance_app.command("attach")
def attach(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    from_env: Annotated[
        bool, typer.Option("--from-env", help="Read GitHub Actions, Azure Pipelines or GitLab CI variables.")
    ] = False,
    source_repo: Annotated[str | None, typer.Option("--source-repo", help="Repository URL (overrides).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Commit id (overrides).")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Workflow / pipeline name.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run / build id.")] = None,
    run_url: Annotated[str | None, typer.Option("--run-url", help="Link to the run.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the recorded row as JSON.")] = False,
    insecure: Annotated[bool, INSECURE_OPTION] = False,
    username: Annotated[str | None, USERNAME_OPTION] = None,
    password_stdin: Annotated[bool, PASSWORD_STDIN_OPTION] = False,
) -> None:
    """Record which repository, commit and pipeline run built REF (POST /api/v1/provenance)."""
    from hallmark.provenance.facts import FactError, ci_from_env

    try:
        values: dict[str, str] = {}
        if from_env:
            values.update(ci_from_env(os.environ))
        given = {"source_repo": source_repo, "revision": revision, "pipeline": pipeline}
        given |= {"run_id": run_id, "run_url": run_url}
        values.update({k: v for k, v in given.items() if v})
        if not values:
            raise CliError("nothing to attach: give --from-env or --source-repo/--revision/--run-url")
        creds = registry_credentials(username, password_stdin)
        base, repository, digest = _target(ref, insecure, creds)
        doc = _call("POST", f"{base}/api/v1/provenance", creds, {"image": f"{repository}@{digest}", **values})
    except (CliError, FactError) as exc:
        raise _fail(str(exc)) from None
    row = doc.get("provenance") or {}
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    said = ", ".join(f"{k} {row[k]}" for k in ("source_repo", "revision", "run_url") if row.get(k))
    typer.echo(f"attached provenance to {repository}@{digest}: {said}")


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("KIND", "VERIFIED", "SOURCE", "REVISION", "PIPELINE", "RUN", "ORIGIN")
    lines = [head]
    for r in rows:
        verified = "-" if r.get("verified") is None else "yes" if r["verified"] else "no"
        run = r.get("run_url") or r.get("run_id") or ""
        revision = (r.get("revision") or "")[:12]
        lines.append(
            (
                r["kind"] + (f" ({r['via']})" if r.get("via") else ""),
                verified,
                r.get("source_repo") or "",
                revision,
                r.get("pipeline") or "",
                run,
                r["origin"][:30],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


@provenance_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    insecure: Annotated[bool, INSECURE_OPTION] = False,
    username: Annotated[str | None, USERNAME_OPTION] = None,
    password_stdin: Annotated[bool, PASSWORD_STDIN_OPTION] = False,
) -> None:
    """Every source's claims about REF, the verified ones first."""
    try:
        creds = registry_credentials(username, password_stdin)
        base, repository, digest = _target(ref, insecure, creds)
        doc = _call("GET", f"{base}/api/v1/repositories/{repository}/images/{digest}/provenance", creds)
    except CliError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    rows = doc.get("provenance") or []
    if not rows:
        typer.echo(f"no provenance recorded for {repository}@{digest}")
        return
    typer.echo(_table(rows))
    for r in rows:
        if r.get("verify_detail") and r.get("verified") is not None:
            typer.echo(f"{r['kind']} {r['origin'][:30]}: {r['verify_detail']}")
    conflicts = (doc.get("summary") or {}).get("conflicts") or []
    if conflicts:
        typer.echo(f"warning: the sources disagree on {', '.join(conflicts)}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(provenance_app, name="provenance")
