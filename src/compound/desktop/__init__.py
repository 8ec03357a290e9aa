"""The Compound desktop app: a native window around the web UI, and the agent sidecar.

Modules, one concept each: ``settings`` (persisted preferences), ``sidecar`` (the agent child
process and its typed events), ``leftovers`` (containers of a killed agent), ``guard`` (the
local server's token, cookie, Host and Origin checks), ``server`` (the local app server),
``controls`` (its routes to the running agent's control socket: pause, resume, drain,
settings), ``bridge`` (the native window's controls), ``window_routes``
(``/local/api/window``: the pages drive the window through the local server), ``window`` (the
pywebview window, run and self-check), ``display`` (display and Qt environment),
``launcher`` (wiring it all for `compound app`).

Imports: compound.protocol, compound.tls, compound.__init__, compound.page_headers,
    compound.agent.settings, compound.agent.runners.docker.orphans,
    compound.agent.control_client, compound.agent.donor, compound.coordinators
"""

# Here, not in the launcher, so `compound --help` can show it without importing the GUI stack.
DEFAULT_SELF_CHECK_TIMEOUT_S = 60.0
