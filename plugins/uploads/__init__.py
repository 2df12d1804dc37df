"""The uploads plugin: RPort's file push (``POST /files``): a file received by the server and
sent to clients, which write it within their ``[file-reception]`` policy."""
