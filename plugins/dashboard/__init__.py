"""dashboard: the web dashboard, a single-page app served at ``/`` that uses only the public REST
API (login, JWT, /clients, /tunnels, /commands, /client-groups)."""
