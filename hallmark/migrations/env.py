"""Alembic environment: runs on the connection Hallmark hands it (see hallmark.metadata.db.migrate)."""

from alembic import context

import hallmark.access.tables
import hallmark.admission.tables
import hallmark.catalog.tables
import hallmark.discovery.tables
import hallmark.inventory.tables
import hallmark.lifecycle.tables
import hallmark.mirror.tables
import hallmark.pipeline.tables
import hallmark.provenance.tables
import hallmark.signing.tables  # noqa: F401  (registers its tables on the shared metadata)
from hallmark.metadata.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via the alembic CLI
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url") or "").connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
