"""The running agent's local control socket: ``lvs-agent status``, ``failover``, ``maint``.

The daemon serves a Unix stream socket (mode 0600, in a 0700 directory: systemd's
``RuntimeDirectory`` (``$RUNTIME_DIRECTORY``, /run/lvs-agent) when set, else
``state_dir``). One request per connection, one JSON object per line each way
(``protocol``); the server (``server``) bounds the request's size and the time a
client may take, never blocks the loop, and answers a bad request with an error (and
counts it). ``client`` asks from the command line; ``view`` builds the JSON-ready
status from the daemon's components; ``render`` prints it like ``ipvsadm -Ln`` with
health beside each real server.

Public surface: ``StatusServer``, ``Handler``, ``ask``, ``AgentUnavailable``,
``server_path``, ``render_status``. This component decides nothing about VRRP, the
lock, IPVS or health: it carries requests to the daemon and answers back.
"""

from agent.status.client import AgentUnavailable, ask
from agent.status.protocol import server_path
from agent.status.render import render_status
from agent.status.server import Handler, StatusServer

__all__ = ["AgentUnavailable", "Handler", "StatusServer", "ask", "render_status", "server_path"]
