"""idle: closes tunnels that stay idle past their idle-timeout-minutes, and at their auto-close."""
