"""The library plugin: RPort's stored commands and scripts (``/library/commands``,
``/library/scripts``), kept in the server's store."""
