"""Lifecycle: health grades, end of life, deprecation and retirement at pull, tag history,
expiration and retention, and the scheduler that runs every periodic job once across workers."""
