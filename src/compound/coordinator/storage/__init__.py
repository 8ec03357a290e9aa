"""Durable state: the database, one store per concern, blobs on disk, retention.

``database`` opens the engine, reader pool and group writer (on SQLite, or on PostgreSQL
through ``backend``); ``job_writes`` is the one write
path of a job's lifecycle and ``file_writes`` that of its files and their expiry; ``jobs``
(rows and moves), ``logs`` (records, with ``log_tail`` and ``page_cache``), ``contributors``,
``files`` (inputs and artifacts), ``tokens``; ``usage`` (what each submitter stores, and its
quotas), ``blobs`` (content-addressed files), ``retention`` and ``compaction`` (space given
back), ``data_dir``; for several coordinators on PostgreSQL, ``cluster_rows`` (lease rows taken
over once), ``notify_channel`` (LISTEN/NOTIFY) and ``peers`` (the live coordinators, from
pg_stat_activity). Knows nothing of sockets or scheduling.

Imports: compound.protocol
"""
