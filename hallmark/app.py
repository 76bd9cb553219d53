"""Wiring: builds the stores, the services and the aiohttp application from a :class:`Config`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from hallmark import __version__
from hallmark.access.service import AccessService
from hallmark.api import access as api_access
from hallmark.api import admission as api_admission
from hallmark.api import advisories_detail as api_advisories_detail
from hallmark.api import catalog as api_catalog
from hallmark.api import explore as api_explore
from hallmark.api import images as api_images
from hallmark.api import inventory as api_inventory
from hallmark.api import mirrors as api_mirrors
from hallmark.api import provenance as api_provenance
from hallmark.api import pull_policy as api_pull_policy
from hallmark.api import repositories as api_repositories
from hallmark.api import signing as api_signing
from hallmark.api import tags as api_tags
from hallmark.api import vex as api_vex
from hallmark.config import Config
from hallmark.lifecycle import pull_policy
from hallmark.metadata.datafolder import write_record
from hallmark.metadata.db import make_engine, migrate
from hallmark.metadata.store import MetadataStore
from hallmark.mirror.proxy import PullThrough
from hallmark.pipeline.runtime import server_context
from hallmark.pipeline.service import Pipeline
from hallmark.portal import routes as portal_routes
from hallmark.registry import http as registry_http
from hallmark.registry.consistency import blob_store_mismatch
from hallmark.registry.service import RegistryService
from hallmark.registry.sessions import UploadIds, load_key
from hallmark.storage import BlobStore, FilesystemBlobStore
from hallmark.web import auth as web_auth
from hallmark.web import dbfaults as web_dbfaults
from hallmark.web import observe as web_observe
from hallmark.web.authz import PUBLIC, REGISTRY, declare, route, undeclared
from hallmark.web.client import TRUSTED_PROXIES, TrustedProxies

log = logging.getLogger("hallmark")


@dataclass
class Hallmark:
    """Everything one process needs; CLI commands and the server share it."""

    config: Config
    meta: MetadataStore
    blobs: BlobStore
    registry: RegistryService
    pipeline: Pipeline
    # Access control; set by build_app (or AccessService.for_metadata for CLI use).
    access: AccessService | None = None

    @classmethod
    def open(cls, config: Config, run_migrations: bool = True) -> Hallmark:
        config.data_path.mkdir(parents=True, exist_ok=True)
        engine = make_engine(config.database_url, config.database.pool_size)
        if run_migrations:
            migrate(engine)
        write_record(config.data_path, config.database_url)  # first start: the folder names its database
        meta = MetadataStore(engine)
        blobs = open_blob_store(config)
        upload_ids = UploadIds(load_key(meta, config.data_path / "registry" / "upload-session-key"))
        registry = RegistryService(blobs, meta, config.registry, upload_ids=upload_ids)
        return cls(config, meta, blobs, registry, Pipeline(config, meta, blobs, registry))

    def close(self) -> None:
        self.registry.executor.shutdown(wait=False, cancel_futures=True)
        self.meta.engine.dispose()


def open_blob_store(config: Config) -> BlobStore:
    """The configured blob driver; S3 is imported only when used (boto3 is slow to import)."""
    if config.storage.driver == "s3":
        from hallmark.storage.s3 import S3BlobStore

        return S3BlobStore.from_config(config.storage)
    return FilesystemBlobStore(config.blob_path)


HALLMARK_KEY = web.AppKey("hallmark", Hallmark)


async def _periodic_cleanup(hm: Hallmark) -> None:
    interval = hm.config.registry.upload_cleanup_interval_seconds
    while True:
        try:
            removed = await hm.registry.run(hm.registry.cleanup_uploads)
            if removed:
                log.info("removed %d expired upload(s)", removed)
        except Exception:
            log.exception("upload cleanup failed")
        await asyncio.sleep(interval)


async def _scheduler_loop(hm: Hallmark) -> None:
    """Periodic jobs (advisory updates, grades, expiration, retention, GC) as rows claimed once."""
    from hallmark.lifecycle import jobs  # noqa: F401  (registers the jobs)
    from hallmark.lifecycle.scheduler import Scheduler

    scheduler = Scheduler(hm.meta)
    loop = asyncio.get_running_loop()
    while True:
        try:
            for result in await loop.run_in_executor(None, scheduler.run_due, hm):
                log.info("periodic job %s: %s", result["job"], result["status"])
        except Exception:
            log.exception("scheduler pass failed")
        await asyncio.sleep(hm.config.lifecycle.scheduler_poll_seconds)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def _check_declarations(app: web.Application) -> None:
    """Refuse to serve a route that states no authorization need (see ``hallmark.web.authz``)."""
    missing = undeclared(app)
    if missing:
        raise RuntimeError("routes without an authorization declaration: " + ", ".join(missing))


def build_app(hm: Hallmark) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[HALLMARK_KEY] = hm
    app[TRUSTED_PROXIES] = TrustedProxies.from_config(hm.config.server)
    mismatch = blob_store_mismatch(hm.meta, hm.blobs)  # e.g. a replica on another's database, with its own blobs
    if mismatch:
        log.warning("%s", mismatch)
    declare(registry_http.dispatch, "*", REGISTRY)  # the registry guard enforces /v2 per registry route
    registry_http.add_routes(app, hm.registry)
    # deprecated images warn, retired ones are refused (or warn) at manifest GET/HEAD
    hm.registry.pull_policy = pull_policy.PullPolicy(hm.meta, hm.config.lifecycle.retired_pull)
    proxy = hm.registry.proxy = PullThrough(hm.config.mirror, hm.registry) if hm.config.mirror.proxy else None
    if proxy is not None:
        app.on_cleanup.append(lambda _app: proxy.close())  # its upstream connections
    app.router.add_routes([route("GET", "/healthz", _health, PUBLIC)])
    web_observe.install(app, hm)  # request ids, /readyz, /metrics
    app.router.add_routes(api_images.routes(hm.pipeline, hm.registry))
    # Before repositories: its /api/v1/repositories/{name:.+} would swallow the image sub-paths.
    app.router.add_routes(api_signing.routes(hm.pipeline, hm.registry))
    app.router.add_routes(api_vex.routes(hm.pipeline, hm.registry))
    app.router.add_routes(api_provenance.routes(hm.pipeline, hm.registry))
    app.router.add_routes(api_catalog.routes(hm.pipeline, hm.registry))
    app.router.add_routes(api_advisories_detail.routes(hm.pipeline, hm.registry))  # one advisory everywhere
    app.router.add_routes(api_pull_policy.routes(hm.meta, hm.config.lifecycle, hm.registry))
    app.router.add_routes(api_tags.routes(hm.config, hm.registry))  # also before repositories
    app.router.add_routes(api_repositories.routes(hm.registry, hm.config))
    app.router.add_routes(api_inventory.routes(hm.meta, hm.config, hm.registry))  # Kubernetes inventories
    app.router.add_routes(api_explore.routes(hm.meta, hm.registry))  # code to cloud queries
    app.router.add_routes(api_admission.routes(hm.pipeline, hm.registry))  # Kubernetes webhooks
    app.router.add_routes(api_mirrors.routes(hm))  # repository mirrors (and their jobs on these workers)

    async def background(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_periodic_cleanup(hm))]
        if hm.config.lifecycle.scheduler and hm.config.pipeline.enabled:
            tasks.append(asyncio.create_task(_scheduler_loop(hm)))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    web_dbfaults.install(app)  # a database restart: 503 with the API's error body (outside access control)
    web_auth.install(app, hm)
    if hm.access is not None and hm.config.access.enabled:
        app.router.add_routes(api_access.routes(hm.access))
    app.router.add_routes(portal_routes.routes(hm, app))  # web portal at /, over the same services
    app.on_startup.append(_check_declarations)
    app.cleanup_ctx.append(background)
    app.cleanup_ctx.append(server_context(hm.pipeline, hm.registry))
    return app
