"""users: API users, user groups and their per-function permissions in the database (RPort's
``[api] auth_user_table``/``auth_group_table``/``auth_group_details_table``), managed through
``/users`` and ``/user-groups``."""
