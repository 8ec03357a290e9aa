"""The ``compound`` command: submit and follow jobs, run a coordinator, an agent, the app.

Imports: compound.protocol, compound.tls, compound.__init__, compound.agent,
    compound.coordinator.server, compound.coordinator.settings, compound.coordinator.storage,
    compound.desktop, compound.coordinators
"""
