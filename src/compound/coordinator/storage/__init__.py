"""Durable state: the database, one store per concern, blobs on disk, retention.

``database`` opens the engine, reader pool and group writer; ``job_writes`` is the one write
path of a job's lifecycle; ``jobs`` (rows and moves), ``logs`` (records, with ``log_tail``
and ``page_cache``), ``contributors``, ``files`` (inputs and artifacts), ``tokens``; ``blobs``
(content-addressed files), ``retention``, ``data_dir``. Knows nothing of sockets or scheduling.

Imports: compound.protocol
"""
