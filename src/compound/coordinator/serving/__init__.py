"""The server process's plumbing: connection bounds, open sockets, graceful shutdown, limits.

``connections`` (deadlines for headers and bodies, a cap on connections), ``tls_accept``
(TLS handshakes counted and bounded as connections), ``open_sockets``
(every WebSocket, for shutdown and revocation), ``shutdown`` (a bounded SIGTERM),
``fd_limit``, ``collector`` (GC pauses), ``log_repeats`` (a log filter), ``metrics`` (the
Prometheus registry: counters the stores move through ``storage.observer``'s verbs, levels
handed in at scrape time). Knows nothing of jobs beyond the metrics' names.

Imports: compound.protocol
"""
