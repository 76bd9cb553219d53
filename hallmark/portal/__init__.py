"""Server-rendered web portal: HTML pages over the same services as the JSON API (``routes.py``)."""
