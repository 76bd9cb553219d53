"""Build side of code-to-cloud: which source repository, commit and pipeline run built an image."""
