"""Reading container images from anywhere Hallmark meets them.

Every source (OCI layout folder, ``docker save`` tarball, remote registry) implements
:class:`~hallmark.oci.source.ImageSource`, so the indexer never cares where bytes come from.
"""

from hallmark.oci.source import (
    Descriptor,
    ImageSource,
    OciError,
    Platform,
    open_source,
)

__all__ = ["Descriptor", "ImageSource", "OciError", "Platform", "open_source"]
