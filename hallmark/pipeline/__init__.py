"""The scanning pipeline behind the registry: index -> match -> report -> sign, run as background jobs."""
