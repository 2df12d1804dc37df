"""auditlog: RPort's audit log. Who did what to which client, from which address, when: every
action of the API routes registered with ``audit=`` and the actions plugins publish as
``AuditEvent``, kept in the store (table ``auditlog``), listed by ``GET /auditlog`` and rotated
out (archived or deleted) by age and count."""
