"""Run side of code-to-cloud: Kubernetes workloads, the images they run and their exposure."""
