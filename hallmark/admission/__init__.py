"""Kubernetes admission webhook: the catalog enforced at deploy time."""
