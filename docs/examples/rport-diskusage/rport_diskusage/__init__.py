"""rport-diskusage: an example third-party rport plugin.

Server side (``rport_diskusage.server``, entry point ``rport.server``): the route
``GET /api/v1/clients/{client_id}/disk-usage?path=/`` asks that client. Agent side
(``rport_diskusage.agent``, entry point ``rport.agent``): the request handler ``diskusage.usage``
answers for the paths its ``[plugins.diskusage] paths`` allows. The logic is in
:mod:`rport_diskusage.usage`, which neither imports pluggy nor rport.
"""

NAME = "diskusage"
