"""tunnels: TCP tunnels from a server port to a port the agent can reach (RPort's tunnels)."""
