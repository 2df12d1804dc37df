"""``[plugins.users]`` in rportd.conf. The users source itself is chosen with RPort's ``[api]``
keys (``auth_user_table``, ``auth_group_table``, ``auth_group_details_table``)."""

from __future__ import annotations

import attrs


@attrs.frozen
class UsersConfig:
    import_auth_file: str = ""
    """An ``[api] auth_file`` (RPort's JSON list of users with bcrypt hashes and groups) whose
    users are added to the database at start-up when it does not have them yet: the way from
    ``auth_file`` to the database users source. Existing users are never changed."""
