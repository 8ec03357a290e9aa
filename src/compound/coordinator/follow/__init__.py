"""Following a job: its log from any point, then live records, then its end; caps on followers.

Reads through the stores and the scheduler handed in with the coordinator's state object
(imported for its type only).

Imports: compound.protocol, compound.coordinator.storage, compound.coordinator.scheduling.hub,
    compound.coordinator.state
"""
