"""Jobs in Docker containers: everything Compound knows of Docker, for the agent, CLI and app.

The host side, one concept per module: ``runner`` (``DockerRunner``: one job, one container,
always removed), ``spec`` (the container's create body and stdin, pure), ``runtime`` (runc,
gVisor's runsc, and what "auto" becomes), ``sandbox`` (one container from start to removal),
``warm_pool`` (containers started ahead of demand), ``stream`` (the attach connection),
``payload`` and ``env`` (what a container is sent), ``outputs`` and ``trailer`` (the job's
outputs split off its stdout), ``interleave`` (the job's stderr framed on its stdout),
``seccomp`` (the system call filter), ``engine`` (connecting to Docker), ``image`` (the
sandbox image), ``orphans`` (containers a node left behind), ``controls`` (pause, thaw,
live limits, CPU used).

``in_container`` holds what runs inside the container; the agent ships it as source.

Imports: compound.agent.runners.base, compound.protocol
"""
