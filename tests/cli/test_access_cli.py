"""Administration from the CLI as from the API: users, roles, permissions, robots and tokens, audited."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hallmark.cli import app


def run(data: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, [*args, "--data-dir", str(data)], input=stdin)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def ok(data: Path, *args: str, stdin: str | None = None) -> str:
    code, out, err = run(data, *args, stdin=stdin)
    assert code == 0, (args, out, err)
    return out


def audit_actions(data: Path) -> list[dict]:
    return [json.loads(line) for line in ok(data, "audit", "export").splitlines()]


def test_users_roles_disable_delete(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert ok(data, "user", "list").strip().startswith("no users yet")
    ok(data, "user", "add", "ops", "--role", "administrator")
    ok(data, "user", "add", "dev", "--password-stdin", stdin="dev-password-123\n")
    ok(data, "permission", "add", "dev", "write", "--repo", "apps/web")
    table = ok(data, "user", "list").splitlines()
    assert table[0].split() == ["NAME", "KIND", "STATE", "ROLES"]
    dev = next(ln for ln in table if ln.split()[0] == "dev")
    assert dev.split()[1:3] == ["user", "active"] and "write on repository apps/web" in dev
    assert "administrator" in next(ln for ln in table if ln.split()[0] == "ops")

    assert ok(data, "user", "disable", "dev").strip() == "disabled user dev"
    users = {u["name"]: u for u in json.loads(ok(data, "user", "list", "--json"))}
    assert users["dev"]["disabled"] is True
    assert users["dev"]["roles"] == [
        {
            "subject_kind": "principal",
            "subject": "dev",
            "scope_kind": "repository",
            "scope": "apps/web",
            "role": "write",
        }
    ]
    ok(data, "user", "enable", "dev")
    assert ok(data, "user", "delete", "dev").strip() == "deleted user dev"
    assert "dev" not in {u["name"] for u in json.loads(ok(data, "user", "list", "--json"))}

    code, _, err = run(data, "user", "delete", "ghost")
    assert code == 2 and err.strip() == "error: user ghost not found"
    code, _, err = run(data, "user", "disable", "ghost")
    assert code == 2 and err.strip().count("\n") == 0
    actions = [(e["action"], e["actor"]) for e in audit_actions(data)]
    for expected in ("user.disable", "user.enable", "user.delete"):
        assert any(a == expected and actor.startswith("cli") for a, actor in actions), expected


def test_permissions_list_and_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "user", "add", "dev", "--password-stdin", stdin="dev-password-123\n")
    assert "no permissions granted" in ok(data, "permission", "list")
    ok(data, "permission", "add", "dev", "read", "--namespace", "apps")
    ok(data, "permission", "add", "dev", "auditor")
    rows = ok(data, "permission", "list").splitlines()
    assert rows[0].split() == ["SUBJECT", "KIND", "ROLE", "ON"]
    assert any(r.split() == ["dev", "user/robot", "read", "namespace", "apps"] for r in rows)
    assert any(r.split() == ["dev", "user/robot", "auditor", "catalog"] for r in rows)
    out = ok(data, "permission", "remove", "dev", "read", "--namespace", "apps")
    assert out.strip() == "removed read on namespace apps from dev"
    left = json.loads(ok(data, "permission", "list", "--json", "--subject", "dev"))
    assert [(g["role"], g["scope_kind"]) for g in left] == [("auditor", "catalog")]
    code, _, err = run(data, "permission", "remove", "dev", "read", "--namespace", "apps")
    assert code == 2 and err.strip() == "error: dev holds no read role on namespace apps"
    assert "permission.revoke" in [e["action"] for e in audit_actions(data)]


def test_robots_and_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "no robot accounts yet" in ok(data, "robot", "list")
    ok(data, "robot", "create", "builder", "--scope", "repository:apps/*:pull,push")
    robots = json.loads(ok(data, "robot", "list", "--json"))
    assert [(r["name"], r["disabled"], r["live_tokens"]) for r in robots] == [("builder", False, 1)]
    assert "builder" in ok(data, "robot", "list")

    ok(data, "user", "add", "dev", "--password-stdin", stdin="dev-password-123\n")
    out = ok(
        data, "token", "create", "dev", "--name", "laptop", "--scope", "repository:apps/web:pull", "--expires-days", "7"
    )
    head, token = out.strip().splitlines()
    assert head.startswith("token ") and head.endswith(" for dev (shown only this once):")
    assert token.startswith("hmk_")
    tid = head.split()[1]
    listed = json.loads(ok(data, "token", "list", "--owner", "dev", "--json"))
    assert [(t["id"], t["name"], t["scopes"], t["state"]) for t in listed] == [
        (tid, "laptop", ["repository:apps/web:pull"], "live")
    ]
    assert listed[0]["expires_at"] is not None and listed[0]["revoked_at"] is None
    table = ok(data, "token", "list")
    assert token not in table and tid in table and "laptop" in table
    assert ok(data, "token", "revoke", tid).strip() == f"revoked token {tid}"
    assert json.loads(ok(data, "token", "list", "--owner", "dev", "--json"))[0]["state"] == "revoked"
    code, _, err = run(data, "token", "revoke", tid)
    assert code == 2 and err.strip() == f"error: token {tid} not found or already revoked"
    ok(data, "token", "create", "dev", "--name", "default")
    ok(data, "token", "create", "dev", "--name", "forever", "--expires-days", "0")
    expiry = {t["name"]: t["expires_at"] for t in json.loads(ok(data, "token", "list", "--owner", "dev", "--json"))}
    assert expiry["default"] is not None and expiry["forever"] is None  # 30 days by default, as in the API
    code, _, err = run(data, "token", "create", "ghost")
    assert code == 2 and err.strip() == "error: ghost not found"
    lines = audit_actions(data)
    assert {"token.create", "token.revoke"} <= {e["action"] for e in lines}
    assert all(token not in json.dumps(e) for e in lines)
