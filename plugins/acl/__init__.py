"""acl: restricts who may connect to a tunnel (``acl=`` addresses and networks, IPv4 and IPv6)."""
