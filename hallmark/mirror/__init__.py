"""Acquisition from other registries: the pull-through cache (proxy) and repository mirrors."""
