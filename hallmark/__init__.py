"""Hallmark: a self-hosted, secure container-image catalog."""

__version__ = "0.1.0"
