"""auth_jwt: logins with signed session tokens (Bearer JWTs), API tokens for scripts, and the
management of agent credentials (``/clients-auth``), on top of auth_basic's users and agents."""
