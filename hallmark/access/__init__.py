"""Access control: identities, roles, Docker token auth and the tamper-evident audit log.

Other modules use two objects from :class:`hallmark.access.service.AccessService` (``hm.access``):

- ``hm.access.authorizer`` decides (``can(identity, repo, action)``, ``has_role(identity, role)``);
- ``hm.access.audit.record(actor, action, repo, digest, result, client_addr, detail)`` appends to the audit log.
"""
