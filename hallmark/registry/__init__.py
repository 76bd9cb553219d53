"""OCI Distribution Specification v1.1 registry: HTTP handlers over a storage-agnostic service."""
