"""What each kind of source says about how an image was built, reduced to one ``Source`` record.

Pure functions over parsed documents (no database, no HTTP): OCI annotations and config labels,
in-toto statements with SLSA provenance (v1 and v0.2) or other predicates, and the CI variables a
pipeline step sees. Source repositories are normalised (``normalise_repo``) so that the same
repository written five ways by five tools is one value to query by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ANNOTATION, LABEL, SLSA, INTOTO, CI = "annotation", "label", "slsa", "intoto", "ci"
KINDS = (ANNOTATION, LABEL, SLSA, INTOTO, CI)

OCI_PREFIX = "org.opencontainers.image."
# The keys recorded, short names as stored in ``facts`` (``org.opencontainers.image.`` dropped).
OCI_KEYS = ("source", "revision", "created", "url", "vendor", "version", "base.name", "base.digest", "title", "authors")
# Older images (label-schema.org) say the same with other names.
LABEL_SCHEMA = {"org.label-schema.vcs-url": "source", "org.label-schema.vcs-ref": "revision"}

SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_TYPES = (SLSA_V1, SLSA_V02)
STATEMENT_TYPES = (
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v0.2",
)
MAX_VALUE = 1024
_REVISION = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
_RUN_ID = re.compile(r"/(?:runs|pipelines|results\?buildId=)/?(\d+)")


class FactError(ValueError):
    """A document that cannot be read as provenance (the message says why, for the reply or the event)."""


@dataclass
class Source:
    """One source's claim about one digest: a row of ``provenance`` before it is written."""

    digest: str
    kind: str
    origin: str
    source_repo: str | None = None
    revision: str | None = None
    pipeline: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    builder_id: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    verified: bool | None = None
    verify_detail: str | None = None


def normalise_repo(value: object) -> str | None:
    """A source repository as ``https://host/path``: no ``.git``, no trailing ``/``, no credentials.

    Accepts ``https://``, ``http://``, ``git+https://``, ``ssh://git@host/...``, ``git://``,
    ``git@host:org/repo`` and ``host/org/repo``; a ``@ref`` suffix (SLSA dependency URIs) and any
    query or fragment are dropped. None when it names no host and path.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 2048 or any(c.isspace() for c in text):
        return None
    if text.startswith("git+"):
        text = text[4:]
    scp = re.match(r"^(?:[\w.-]+@)?([\w.-]+\.[\w.-]+|localhost):(?!\d+(?:/|$))(.+)$", text)
    if "://" not in text and scp:
        text = f"https://{scp.group(1)}/{scp.group(2)}"
    elif "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not host:
        return None
    path = parts.path
    at = path.find("@")
    if at >= 0:
        path = path[:at]  # git+https://host/org/repo@refs/heads/main
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    path = path.rstrip("/")
    if not path or path == "/" or "." == path.strip("/"):
        return None
    keep_port = port is not None and parts.scheme in ("http", "https") and port not in (80, 443)
    netloc = host.lower() + (f":{port}" if keep_port else "")
    return f"https://{netloc}{path}"


def obj(doc: Any, key: str) -> dict[str, Any]:
    """``doc[key]`` when both are JSON objects, else {} (documents from outside are read defensively)."""
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def _text(value: object, limit: int = MAX_VALUE) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _revision(value: object) -> str | None:
    text = _text(value)
    return text if text and _REVISION.match(text) else None


def _run_id(url: str | None) -> str | None:
    m = _RUN_ID.search(url or "")
    return m.group(1) if m else None


def _http_url(value: object) -> str | None:
    text = _text(value, 2048)
    if text and urlsplit(text).scheme in ("http", "https") and urlsplit(text).netloc:
        return text
    return None


# -- annotations and labels -------------------------------------------------------------------------
def from_oci_keys(values: Mapping[str, Any] | None, digest: str, kind: str, origin: str) -> Source | None:
    """The ``org.opencontainers.image.*`` (and label-schema) facts of a manifest or config; None if none."""
    if not isinstance(values, Mapping):
        return None
    facts: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            continue
        short = key[len(OCI_PREFIX) :] if key.startswith(OCI_PREFIX) else LABEL_SCHEMA.get(key)
        if short in OCI_KEYS and short not in facts:
            text = _text(value)
            if text:
                facts[short] = text
    if not facts:
        return None
    return Source(
        digest,
        kind,
        origin,
        source_repo=normalise_repo(facts.get("source")),
        revision=_revision(facts.get("revision")),
        facts=facts,
    )


def labels_of(config: Any) -> dict[str, Any]:
    """An image config's labels (``config.Labels``), {} when it has none or is not an object."""
    inner = config.get("config") if isinstance(config, dict) else None
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return labels if isinstance(labels, dict) else {}


# -- in-toto statements ---------------------------------------------------------------------------------
def check_statement(statement: Any, digest: str) -> dict[str, Any]:
    """An in-toto statement that names ``digest`` among its subjects, or FactError saying what is wrong."""
    if not isinstance(statement, dict):
        raise FactError("the in-toto statement is not a JSON object")
    if statement.get("_type") not in STATEMENT_TYPES:
        raise FactError(f"not an in-toto statement (_type {str(statement.get('_type'))[:100]!r})")
    if not isinstance(statement.get("predicateType"), str):
        raise FactError("the in-toto statement has no predicateType")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise FactError("the in-toto statement has no subject")
    algo, _, hexpart = digest.partition(":")
    for s in subjects:
        digests = s.get("digest") if isinstance(s, dict) else None
        if isinstance(digests, dict) and str(digests.get(algo, "")).lower() == hexpart:
            return statement
    raise FactError(f"no subject of the in-toto statement is {digest}")


def _dependency_commit(deps: Any, repo: str | None) -> tuple[str | None, str | None]:
    """(source repo, commit) from SLSA resolvedDependencies / materials: the git one, preferring ``repo``."""
    found: list[tuple[str | None, str]] = []
    for dep in deps if isinstance(deps, list) else []:
        if not isinstance(dep, dict) or not isinstance(dep.get("digest"), dict):
            continue
        d = dep["digest"]
        commit = _revision(d.get("gitCommit") or d.get("sha1"))
        if commit:
            found.append((normalise_repo(dep.get("uri")), commit))
    for dep_repo, commit in found:
        if repo is not None and dep_repo == repo:
            return dep_repo, commit
    return found[0] if found else (None, None)


def _buildkit_vcs(metadata: Any) -> dict[str, Any]:
    bk = metadata.get("https://mobyproject.org/buildkit@v1#metadata") if isinstance(metadata, dict) else None
    vcs = bk.get("vcs") if isinstance(bk, dict) else None
    return vcs if isinstance(vcs, dict) else {}


def from_slsa_v1(predicate: dict[str, Any], src: Source) -> None:
    build = obj(predicate, "buildDefinition")
    run = obj(predicate, "runDetails")
    ext = obj(build, "externalParameters")
    workflow = obj(ext, "workflow")
    config_source = obj(ext, "configSource")
    builder = obj(run, "builder")
    meta = obj(run, "metadata")
    vcs = _buildkit_vcs(meta)
    repo = (
        normalise_repo(workflow.get("repository"))
        or normalise_repo(ext.get("source"))
        or normalise_repo(ext.get("repository"))
        or normalise_repo(vcs.get("source"))
        or normalise_repo(config_source.get("uri"))
    )
    dep_repo, commit = _dependency_commit(build.get("resolvedDependencies"), repo)
    src.source_repo = repo or dep_repo
    src.revision = commit or _revision(vcs.get("revision"))
    src.pipeline = _text(workflow.get("path"), 255) or _text(config_source.get("path"), 255)
    src.builder_id = _text(builder.get("id"), 2048)
    invocation = _text(meta.get("invocationId"), 2048)
    src.run_url = _http_url(invocation)
    src.run_id = _run_id(invocation) or (invocation[:128] if invocation and not src.run_url else None)
    src.facts.update(
        {
            k: v
            for k, v in {
                "buildType": _text(build.get("buildType")),
                "workflow_ref": _text(workflow.get("ref")),
                "invocationId": invocation,
                "startedOn": _text(meta.get("startedOn")),
                "finishedOn": _text(meta.get("finishedOn")),
            }.items()
            if v
        }
    )


def from_slsa_v02(predicate: dict[str, Any], src: Source) -> None:
    builder = obj(predicate, "builder")
    invocation = obj(predicate, "invocation")
    config_source = obj(invocation, "configSource")
    meta = obj(predicate, "metadata")
    vcs = _buildkit_vcs(meta)
    repo = normalise_repo(config_source.get("uri")) or normalise_repo(vcs.get("source"))
    cs_digest = obj(config_source, "digest")
    dep_repo, commit = _dependency_commit(predicate.get("materials"), repo)
    src.source_repo = repo or dep_repo
    src.revision = (
        _revision(cs_digest.get("sha1") or cs_digest.get("gitCommit")) or commit or _revision(vcs.get("revision"))
    )
    src.pipeline = _text(config_source.get("entryPoint"), 255)
    src.builder_id = _text(builder.get("id"), 2048)
    invocation_id = _text(meta.get("buildInvocationId"), 2048)
    src.run_url = _http_url(invocation_id)
    src.run_id = _run_id(invocation_id) or (invocation_id[:128] if invocation_id and not src.run_url else None)
    if predicate.get("buildType"):
        src.facts["buildType"] = _text(predicate.get("buildType"))


def from_statement(statement: dict[str, Any], digest: str, origin: str) -> Source:
    """A checked statement as a source: kind ``slsa`` for SLSA provenance, else ``intoto``."""
    predicate_type = str(statement["predicateType"])[:255]
    predicate = statement.get("predicate")
    predicate = predicate if isinstance(predicate, dict) else {}
    kind = SLSA if predicate_type in SLSA_TYPES else INTOTO
    src = Source(digest, kind, origin, facts={"predicateType": predicate_type})
    if predicate_type == SLSA_V1:
        from_slsa_v1(predicate, src)
    elif predicate_type == SLSA_V02:
        from_slsa_v02(predicate, src)
    return src


# -- CI metadata ----------------------------------------------------------------------------------------------
CI_FIELDS = ("source_repo", "revision", "pipeline", "run_id", "run_url", "builder_id", "actor", "ref", "ci")
GITHUB_VARS = (
    "GITHUB_REPOSITORY",
    "GITHUB_SHA",
    "GITHUB_WORKFLOW",
    "GITHUB_RUN_ID",
    "GITHUB_SERVER_URL",
    "GITHUB_ACTOR",
    "GITHUB_REF",
)
AZURE_VARS = (
    "BUILD_REPOSITORY_URI",
    "BUILD_SOURCEVERSION",
    "BUILD_DEFINITIONNAME",
    "BUILD_BUILDID",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
    "SYSTEM_TEAMPROJECT",
    "BUILD_REQUESTEDFOR",
)
GITLAB_VARS = (
    "CI_PROJECT_URL",
    "CI_COMMIT_SHA",
    "CI_PIPELINE_NAME",
    "CI_CONFIG_PATH",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "GITLAB_USER_LOGIN",
    "CI_COMMIT_REF_NAME",
)


def ci_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """The CI metadata of the pipeline this process runs in (GitHub Actions, Azure Pipelines, GitLab CI).

    Raises FactError naming the variables looked for when none of the three is recognised.
    """

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    out: dict[str, str | None]
    if get("GITHUB_REPOSITORY") and get("GITHUB_SHA"):
        server = (get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        repo, run = get("GITHUB_REPOSITORY"), get("GITHUB_RUN_ID")
        out = {
            "ci": "github-actions",
            "source_repo": f"{server}/{repo}",
            "revision": get("GITHUB_SHA"),
            "pipeline": get("GITHUB_WORKFLOW"),
            "run_id": run,
            "run_url": f"{server}/{repo}/actions/runs/{run}" if run else None,
            "actor": get("GITHUB_ACTOR"),
            "ref": get("GITHUB_REF"),
        }
    elif get("BUILD_REPOSITORY_URI") and get("BUILD_SOURCEVERSION"):
        collection = get("SYSTEM_TEAMFOUNDATIONCOLLECTIONURI")
        project, build = get("SYSTEM_TEAMPROJECT"), get("BUILD_BUILDID")
        if collection and not collection.endswith("/"):
            collection += "/"
        out = {
            "ci": "azure-pipelines",
            "source_repo": get("BUILD_REPOSITORY_URI"),
            "revision": get("BUILD_SOURCEVERSION"),
            "pipeline": get("BUILD_DEFINITIONNAME"),
            "run_id": build,
            "run_url": f"{collection}{project}/_build/results?buildId={build}"
            if collection and project and build
            else None,
            "actor": get("BUILD_REQUESTEDFOR"),
            "ref": get("BUILD_SOURCEBRANCH"),
        }
    elif get("CI_PROJECT_URL") and get("CI_COMMIT_SHA"):
        out = {
            "ci": "gitlab-ci",
            "source_repo": get("CI_PROJECT_URL"),
            "revision": get("CI_COMMIT_SHA"),
            "pipeline": get("CI_PIPELINE_NAME") or get("CI_CONFIG_PATH"),
            "run_id": get("CI_PIPELINE_ID"),
            "run_url": get("CI_PIPELINE_URL"),
            "actor": get("GITLAB_USER_LOGIN"),
            "ref": get("CI_COMMIT_REF_NAME"),
        }
    else:
        raise FactError(
            "no CI metadata in the environment: looked for GitHub Actions ("
            + ", ".join(GITHUB_VARS)
            + "), Azure Pipelines ("
            + ", ".join(AZURE_VARS)
            + ") and GitLab CI ("
            + ", ".join(GITLAB_VARS)
            + "); at least the repository and commit variables are needed"
        )
    return {k: v for k, v in out.items() if v}


def from_ci(values: Mapping[str, Any], digest: str, origin: str) -> Source:
    """CI metadata (``CI_FIELDS``) as a source; FactError when a field is unusable or nothing is said."""
    src = Source(digest, CI, origin)
    raw_repo = values.get("source_repo")
    if raw_repo:
        src.source_repo = normalise_repo(raw_repo)
        if src.source_repo is None:
            raise FactError(f"source_repo {str(raw_repo)[:200]!r} is not a repository URL")
    if values.get("revision"):
        src.revision = _revision(values["revision"])
        if src.revision is None:
            raise FactError("revision must be a commit id (letters, digits, . _ / + -, at most 128)")
    if values.get("run_url"):
        src.run_url = _http_url(values["run_url"])
        if src.run_url is None:
            raise FactError("run_url must be an http(s) URL")
    src.pipeline = _text(values.get("pipeline"), 255)
    src.run_id = _text(values.get("run_id"), 128)
    src.builder_id = _text(values.get("builder_id"), 2048)
    for key in ("actor", "ref", "ci"):
        text = _text(values.get(key), 255)
        if text:
            src.facts[key] = text
    if not (src.source_repo or src.revision or src.run_id or src.run_url):
        raise FactError("nothing to record: give at least source_repo, revision, run_id or run_url")
    return src
