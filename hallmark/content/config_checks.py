"""Image-configuration checks, mapped to CIS Docker Benchmark v1.6.0 ids where one exists.

Input is the OCI image config document (``config``, ``history``) and, for the file-mode
checks, tar header mode bits. No library evaluates OCI configs against CIS, and Dockerfile
linters (hadolint, Trivy's DS rules) need the Dockerfile, which a registry never sees, so the
checks are written here against what the config and history record.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hallmark.content.model import Finding, Severity


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    id: str
    title: str
    severity: Severity
    description: str
    remediation: str
    cis_id: str | None = None


CIS_VERSION = "CIS Docker Benchmark v1.6.0"

CHECKS: dict[str, ConfigCheck] = {
    c.id: c
    for c in (
        ConfigCheck(
            "root-user",
            "Image runs as root",
            "high",
            "The config has no USER, or USER is root/0, so processes start as root and a container "
            "escape or a mounted volume gives full privileges.",
            "Create an unprivileged user in the image and set `USER <name>` (or a numeric UID).",
            "4.1",
        ),
        ConfigCheck(
            "secret-in-env",
            "Secret in ENV",
            "high",
            "An environment variable set in the image holds a credential. ENV values are stored in "
            "the image config and history and are readable by anyone who can pull the image.",
            "Pass secrets at run time (orchestrator secrets, mounted files) instead of baking them "
            "into ENV; rotate the exposed value.",
            "4.10",
        ),
        ConfigCheck(
            "secret-in-build-arg",
            "Secret passed as build argument",
            "high",
            "A build argument that looks like a credential was recorded in the image history "
            "(`RUN |N NAME=value ...`), where every puller can read it.",
            "Use BuildKit secret mounts (`RUN --mount=type=secret`) instead of ARG; rotate the value.",
            "4.10",
        ),
        ConfigCheck(
            "add-remote-url",
            "ADD fetches a remote URL",
            "medium",
            "The history shows `ADD <url>`: the download is not verified and changes between builds.",
            "Download with a checksum-verifying step (`curl` + `sha256sum -c`) or `ADD --checksum=`, "
            "and prefer COPY for local files.",
            "4.9",
        ),
        ConfigCheck(
            "setuid-file",
            "File with setuid bit",
            "low",
            "A setuid executable runs with its owner's privileges and is a common escalation path.",
            "Remove the bit where not needed: `RUN find / -xdev -perm /4000 -type f -exec chmod u-s {} +`.",
            "4.8",
        ),
        ConfigCheck(
            "setgid-file",
            "File with setgid bit",
            "low",
            "A setgid executable runs with its group's privileges and is a common escalation path.",
            "Remove the bit where not needed: `RUN find / -xdev -perm /2000 -type f -exec chmod g-s {} +`.",
            "4.8",
        ),
        ConfigCheck(
            "world-writable",
            "World-writable file or directory",
            "medium",
            "Any user in the container can modify this path (directories: without the sticky bit), "
            "so a low-privileged process can tamper with what others execute or read.",
            "Drop the write bit for others (`chmod o-w`), or set the sticky bit on shared directories.",
            None,
        ),
        ConfigCheck(
            "ssh-port-exposed",
            "SSH port 22 exposed",
            "medium",
            "The image exposes port 22, which suggests an SSH daemon inside the container: another "
            "credentialed entry point to patch and audit.",
            "Remove sshd and `EXPOSE 22`; use `docker exec`/`kubectl exec` for access.",
            "5.6",
        ),
        ConfigCheck(
            "no-healthcheck",
            "No HEALTHCHECK",
            "low",
            "The image defines no HEALTHCHECK, so the engine cannot tell a hung service from a healthy one.",
            "Add a `HEALTHCHECK` instruction that probes the service.",
            "4.6",
        ),
        ConfigCheck(
            "latest-base-image",
            "Base image referenced by `latest`",
            "medium",
            "The base image is referenced by the mutable `latest` tag (or no tag), so rebuilds pick up "
            "unreviewed changes and the build is not reproducible.",
            "Pin the base image to a version tag and digest (`FROM image:1.2@sha256:...`).",
            None,
        ),
    )
}

# Variable names that hold credentials; "_FILE"/"_PATH"-style names point at them instead.
SENSITIVE_NAME = re.compile(
    r"(?i)(?:^|[_.-])(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|secret[_-]?key|client[_-]?secret|credentials?|auth[_-]?token)(?:$|[_.-])"
)
NON_SECRET_NAME = re.compile(r"(?i)[_.-](?:file|path|dir|url|uri|host|port|user(?:name)?|name|id|type|len(?:gth)?)$")
NON_SECRET_VALUE = re.compile(r"(?i)^(?:|true|false|yes|no|none|null|0|1|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|/.*)$")
BUILD_ARGS = re.compile(r"^(?:RUN\s+)?\|(\d+)\s+(.*)$", re.S)  # classic and BuildKit spellings
ENV_INSTR = re.compile(r"(?:^|#\(nop\)\s+)ENV\s+(.*)", re.S)
MAX_HISTORY_TEXT = 64 * 1024  # created_by strings are short; a huge one is cut, not scanned whole
ADD_REMOTE = re.compile(r"(?i)(?:^|#\(nop\)\s+|\s)ADD\s+(?:--\S+\s+)*(?:(?:https?|ftp)://|url:)\S*")
URL_USERINFO = re.compile(r"://[^/\s@]+@")
FROM_REF = re.compile(r"(?i)(?:^|\s)FROM\s+(?:--platform=\S+\s+)?([^\s]+)")
BASE_LABELS = ("org.opencontainers.image.base.name", "org.label-schema.base-image", "base.image")


def finding(check_id: str, **kw: Any) -> Finding:
    c = CHECKS[check_id]
    return Finding(
        kind="config",
        rule_id=c.id,
        severity=c.severity,
        title=c.title,
        engine="hallmark",
        description=c.description,
        remediation=c.remediation,
        cis_id=c.cis_id,
        **kw,
    )


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def is_sensitive(name: str, value: str) -> bool:
    """Name looks like a credential and the value is a literal (not empty, a flag, or a reference)."""
    return bool(SENSITIVE_NAME.search(name) and not NON_SECRET_NAME.search(name) and not NON_SECRET_VALUE.match(value))


def _split_assignments(text: str) -> Iterator[tuple[str, str]]:
    """``A=1 B="x y"`` -> (A, 1), (B, x y); legacy ``ENV A value`` -> (A, value)."""
    text = text.strip()
    if "=" not in text.split(" ", 1)[0]:
        name, _, value = text.partition(" ")
        if name:
            yield name, value.strip().strip("\"'")
        return
    for m in re.finditer(r"""([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)""", text):
        yield m.group(1), m.group(2).strip("\"'")


def _is_latest(ref: str) -> bool:
    ref = ref.strip()
    if not ref or "@" in ref or ref.lower() == "scratch" or "$" in ref:
        return False
    last = ref.rsplit("/", 1)[-1]
    return ":" not in last or last.rsplit(":", 1)[1] == "latest"


def check_config(config_doc: dict[str, Any]) -> list[Finding]:
    """Config-only checks (no secret rules): user, ENV names, build args, ADD, ports, healthcheck, base."""
    cfg = config_doc.get("config") or {}
    out: list[Finding] = []

    user = str(cfg.get("User") or "").split(":", 1)[0].strip()
    if user in {"", "root", "0"}:
        out.append(finding("root-user", location="config.User", preview=f"User={user or '(unset)'}"))

    for i, item in enumerate(cfg.get("Env") or []):
        name, _, value = str(item).partition("=")
        if is_sensitive(name, value):
            out.append(
                finding(
                    "secret-in-env",
                    location=f"config.Env[{i}]",
                    preview=f"{name}=********",
                    fingerprint=_sha(value),
                    extra={"variable": name},
                )
            )

    ports = {str(p).split("/", 1)[0] for p in (cfg.get("ExposedPorts") or {})}
    if "22" in ports:
        out.append(finding("ssh-port-exposed", location="config.ExposedPorts", preview="22/tcp"))

    hc = cfg.get("Healthcheck") or {}
    test = hc.get("Test") if isinstance(hc, dict) else None
    if not test or test == ["NONE"]:
        out.append(finding("no-healthcheck", location="config.Healthcheck"))

    labels = cfg.get("Labels") or {}
    for key in BASE_LABELS:
        if key in labels and _is_latest(str(labels[key])):
            out.append(finding("latest-base-image", location=f"config.Labels[{key}]", preview=str(labels[key])))

    for i, entry in enumerate(config_doc.get("history") or []):
        out.extend(_check_history(i, str(entry.get("created_by") or ""), str(entry.get("comment") or "")))
    return out


def _check_history(i: int, created_by: str, comment: str) -> Iterator[Finding]:
    loc = f"history[{i}].created_by"
    text = created_by[:MAX_HISTORY_TEXT].strip().removesuffix("# buildkit").rstrip()
    m = BUILD_ARGS.match(text)
    if m:
        # "|2 A=1 B=2 /bin/sh -c ..." records the build args of a RUN step.
        count, rest = int(m.group(1)), m.group(2)
        for name, value in list(_split_assignments(rest))[:count]:
            if is_sensitive(name, value):
                yield finding(
                    "secret-in-build-arg",
                    location=loc,
                    preview=f"{name}=********",
                    fingerprint=_sha(value),
                    extra={"variable": name},
                )
    env = ENV_INSTR.search(text)
    if env and not m:
        for name, value in _split_assignments(env.group(1)):
            if is_sensitive(name, value):
                yield finding(
                    "secret-in-env",
                    location=loc,
                    preview=f"ENV {name}=********",
                    fingerprint=_sha(value),
                    extra={"variable": name},
                )
    add = ADD_REMOTE.search(text)
    if add:
        url = URL_USERINFO.sub("://********@", add.group(0).strip())  # never echo URL credentials
        yield finding("add-remote-url", location=loc, preview=url[:200])
    for source in (text, comment):
        ref = FROM_REF.search(source)
        if ref and _is_latest(ref.group(1)):
            yield finding(
                "latest-base-image",
                location=loc if source is text else f"history[{i}].comment",
                preview=f"FROM {ref.group(1)}"[:200],
            )


_VALUE_BEFORE = re.compile(r"""([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*["']?[^\s"']*$""")


def variable_at(location: str, text: str, offset: int) -> dict[str, str]:
    """Which variable of the image config holds the text at ``offset``: ``{"variable": NAME,
    "variable_kind": "env" | "build-arg" | "label"}`` (empty when none does), so a report names
    the variable a secret sits in and never needs its value to say where it is."""
    if location.startswith("config.Env["):
        name, sep, _ = text.partition("=")
        return {"variable": name, "variable_kind": "env"} if sep and name else {}
    if location.startswith("config.Labels["):
        return {"variable": location[len("config.Labels[") : -1], "variable_kind": "label"}
    if not location.startswith("history["):
        return {}
    m = _VALUE_BEFORE.search(text, 0, offset)
    if m is None:
        return {}
    stripped = text.strip().removesuffix("# buildkit").rstrip()
    kind = "build-arg" if BUILD_ARGS.match(stripped) else "env" if ENV_INSTR.search(stripped) else "shell"
    return {"variable": m.group(1), "variable_kind": kind}


def check_mode(
    path: str, layer_index: int | None, layer_digest: str | None, mode: int, is_dir: bool = False
) -> list[Finding]:
    """setuid/setgid/world-writable checks from tar header mode bits (symlinks are never passed)."""
    out: list[Finding] = []
    where = {
        "path": path,
        "layer_index": layer_index,
        "layer_digest": layer_digest,
        "preview": f"mode {stat.filemode(mode | (stat.S_IFDIR if is_dir else stat.S_IFREG))}",
    }
    if not is_dir and mode & stat.S_ISUID:
        out.append(finding("setuid-file", **where))
    if not is_dir and mode & stat.S_ISGID:
        out.append(finding("setgid-file", **where))
    if mode & stat.S_IWOTH and not (is_dir and mode & stat.S_ISVTX):
        out.append(finding("world-writable", **where))
    return out
