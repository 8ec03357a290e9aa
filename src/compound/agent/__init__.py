"""The contributor's agent: connects to the coordinator, heartbeats, runs jobs, streams output.

``agent`` (the process), ``connection`` (the socket and its protocol), ``outbox`` (reports
kept until acknowledged), ``worker`` (one job), ``output`` (batching a job's output),
``deps*`` (a job's packages), ``job_files``, ``settings``, ``capacity`` (what the machine
lends by default), ``identity``, ``backoff``,
``events`` (typed events for the desktop app); ``runners`` (where jobs run).

Imports: compound.protocol, compound.tls, compound.__init__
"""
