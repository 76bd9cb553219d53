"""Queries over the code-to-cloud graph: source -> commit -> run -> image -> workload -> exposure."""
