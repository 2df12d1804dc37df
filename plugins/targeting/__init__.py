"""targeting: client groups (``/client-groups``), ``/client-tags``, the ``groups`` of each client,
and the choice of the clients a multi-client request targets (client ids, group ids, tags or
labels), with RPort's rules and messages."""
