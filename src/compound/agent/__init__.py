"""The contributor's agent: connects to the coordinator, heartbeats, runs jobs, streams output.

``agent`` (the process), ``connection`` (the socket and its protocol), ``outbox`` (reports
kept until acknowledged), ``worker`` (one job), ``output`` (batching a job's output),
``deps*`` (a job's packages), ``mount_dir`` (where containers mount from), ``job_files``,
``settings``, ``identity``, ``backoff``, ``donor_controls``, ``donor``, ``policy``,
``control``, ``control_server``, ``control_client`` (what its donor changes live),
``machine_load``, ``capacity`` (slots changed live), ``default_share`` (what the machine
lends by default),
``events`` (typed events for the desktop app), ``closed_output`` (when the reader of stdout or
stderr is gone); ``runners`` (where jobs run).

Imports: compound.protocol, compound.tls, compound.__init__, compound.coordinators
"""
