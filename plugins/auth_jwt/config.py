"""``[plugins.auth_jwt]`` in rportd.conf. The signing secret is RPort's ``[api] jwt_secret``."""

from __future__ import annotations

import attrs

from rport.core.plugin import Duration

DAY = 86400.0


@attrs.frozen
class AuthJwtConfig:
    token_lifetime: Duration = Duration(600)
    """Lifetime of a login token when ``?token-lifetime=`` is absent or 0 (RPort: 10 min)."""
    max_token_lifetime: Duration = Duration(90 * DAY)
    """The largest ``?token-lifetime=`` accepted (RPort: 7776000 s, 90 days); above is a 400."""
    api_token_lifetime: Duration = Duration(365 * DAY)
    """Lifetime of an API token created without ``expires_at`` (RPort: one year)."""
    purge_interval: Duration = Duration(3600)
    """How often expired login sessions are deleted from the store."""
