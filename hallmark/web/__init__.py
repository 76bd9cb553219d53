"""The HTTP layer: authentication, the authorization table, client addresses and error mapping.

Domain packages (access, registry, pipeline, catalog, ...) never import from here; the API
route modules (``hallmark.api``), the portal and ``hallmark.app`` do.
"""
