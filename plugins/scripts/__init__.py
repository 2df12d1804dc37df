"""The scripts plugin: RPort's scripts (``/clients/{id}/scripts``, ``/scripts``), run as jobs of
the commands plugin with ``is_script``, within the agent's ``[remote-scripts]``."""
