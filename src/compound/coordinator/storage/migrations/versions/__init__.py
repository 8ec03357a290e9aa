"""Alembic revisions, one module per schema change, loaded by Alembic from their files.

Imports: compound.coordinator.storage.migrations
"""
