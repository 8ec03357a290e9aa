"""Who runs what: queue mirror, leases, deadlines, dispatch, recovery, sessions, presence, quotas.

``scheduler`` routes queued jobs to idle contributors and recovers lost work; ``leases`` owns
the leases; ``deadlines`` the timeouts and cancels the coordinator enforces itself;
``job_queue`` mirrors the queued rows; ``sessions`` the connected contributors; ``presence``
their heartbeats; ``quotas`` the limits on new work; ``hub`` wakes followers when a job or
the queue moved; ``listings`` gives back a job its agent's heartbeats stopped listing;
``waiting`` why a queued job waits and when it may start (counts kept as
sessions change, the recent start rate); ``random_ids`` draws ids; ``tenants`` the opaque
owner tag sent with each job. ``cluster`` (hints between
coordinators sharing a PostgreSQL database, cancels forwarded to a lease's holder),
``shared_leases`` (the lease rows decide expiries there) and ``cluster_view`` (the live
coordinators, the others' contributors' jobs). No network I/O:
messages to contributors are queued on their sessions.

Imports: compound.protocol, compound.coordinator.settings, compound.coordinator.storage
"""
