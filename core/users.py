"""Who is calling the API: the result of authentication, shared by every auth plugin."""

from __future__ import annotations

import attrs

from .errors import ApiError

ADMINISTRATORS = "Administrators"


@attrs.frozen
class User:
    username: str
    groups: tuple[str, ...] = ()
    via: str = ""  # the plugin that authenticated the request, e.g. "auth_basic"
    scopes: tuple[str, ...] = ("read+write",)

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups


def require_admin(request: object) -> User:
    """The caller of an API request, who must be an administrator (RPort's 403 otherwise)."""
    user = getattr(getattr(request, "state", None), "user", None)
    if not isinstance(user, User) or not user.is_admin:
        raise ApiError(403, "current user should belong to Administrators group to access this "
                            "resource", code="ERR_CODE_FORBIDDEN")
    return user
