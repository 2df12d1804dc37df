"""The agent link: frames, the multiplexed session, and the WebSocket transport."""

PROTOCOL_VERSION = 1
"""Version of the agent link protocol. Agent and server exchange the versions they speak in the
hello and pick the highest common one; bump it when frames or handshake change incompatibly."""

SUPPORTED_PROTOCOLS = (1,)
