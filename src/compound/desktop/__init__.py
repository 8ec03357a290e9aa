"""The Compound desktop app: a native window around the web UI, and the agent sidecar.

Modules, one concept each: ``settings`` (persisted preferences), ``sidecar`` (the agent child
process and its typed events), ``guard`` (the local server's token, cookie and Host checks),
``server`` (the local app server), ``bridge`` (the JS <-> Python window controls), ``window``
(the pywebview window, normal run and self-check), ``display`` (Qt/X11 environment checks).
"""
