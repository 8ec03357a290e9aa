"""How the agent runs a job: ``base`` (what the agent needs from a sandbox) and ``docker``.

Imports: compound.protocol
"""
