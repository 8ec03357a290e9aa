"""The coordinator: queues jobs, routes them to contributors, relays their logs, keeps state.

The composition root sits at this level: ``settings`` (one explicit settings object), ``state``
(the runtime objects, built once), ``app`` (the ASGI app that builds them in its lifespan) and
``server`` (the process: uvicorn on a socket we bind). The packages below, lowest first:

- ``storage``: the database and every store (jobs and their moves, logs, contributors, files,
  tokens), blobs, retention;
- ``scheduling``: the queue mirror, leases, dispatch and recovery, sessions, presence, quotas,
  the change hub;
- ``follow``: following a job's log live, and the caps on followers;
- ``routes``: the HTTP/WS edge (parsing, roles, close codes, the contributor protocol);
- ``serving``: connection bounds, open sockets, graceful shutdown (no knowledge of jobs).

Imports: compound.protocol, compound.tls, compound.page_headers, compound.__init__
"""
