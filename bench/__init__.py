"""Benchmarks: each prints Hallmark's figures against a named peer measured in the same run."""
