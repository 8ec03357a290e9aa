"""The HTTP and WebSocket edge: parsing, roles, close codes, one sentence per refusal.

``api`` (/api/v1 and /healthz), ``files`` (inputs and artifacts), ``seed`` (the seed's
endpoints), ``submit_route`` and ``follow_route`` (hot routes answered ahead of FastAPI's
router), ``contributor_socket`` driving the pure ``contributor_protocol``, ``access`` (who is
asking), ``browser_guard`` (what a web page may do), ``submission``, ``artifact_tar`` and
``tar_reader`` (bounded parsers of untrusted bodies), ``socket`` (WebSocket helpers),
``metrics_route`` (the Prometheus scrape; the registry itself is ``serving.metrics``).

Imports: compound.protocol, compound.__init__, compound.coordinator.settings,
    compound.coordinator.state, compound.coordinator.storage, compound.coordinator.scheduling,
    compound.coordinator.follow, compound.coordinator.serving.metrics
"""
