"""The Hallmark JSON API (``/api/v1``): what the portal and the CLI use."""
