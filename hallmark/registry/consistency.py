"""A start-up check that this process sees the blobs its database knows.

A second ``hallmark serve`` pointed at the first one's PostgreSQL but keeping blobs in its own
data folder (the filesystem driver's default) answers 200 for every manifest and 404 for every
blob behind it. Nothing fails loudly, so the server says so when it starts: it samples the
newest blobs the database records and warns when the blob store holds none of them.
"""

from __future__ import annotations

from sqlalchemy import select

from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import blobs as blob_rows
from hallmark.storage import BlobStore

SAMPLE = 3


def blob_store_mismatch(meta: MetadataStore, store: BlobStore) -> str | None:
    """A warning when the store lacks all of the ``SAMPLE`` newest blobs the database records, else None.

    All of them, not one: garbage collection may be deleting one at this moment, but a blob row
    is written only after its blob was stored, so a store missing every sampled blob is not the
    one the database's other users write to.
    """
    with meta.engine.connect() as conn:
        digests = list(
            conn.execute(select(blob_rows.c.digest).order_by(blob_rows.c.created_at.desc()).limit(SAMPLE)).scalars()
        )
    try:
        if not digests or any(store.stat(d) is not None for d in digests):
            return None
    except Exception:  # an unreachable store is reported by /readyz and by the requests themselves
        return None
    return (
        f"the blob store holds none of the {len(digests)} newest blobs the database records "
        f"(e.g. {digests[0]}): manifests will be served but their blobs answer 404. Replicas on one "
        'database must share one blob store: [storage] driver = "s3" with one bucket, or one '
        "[storage] path on shared storage"
    )
