"""commands: run commands on agents (one or many), follow their output live, read their results."""
