"""The database schema's history: Alembic revisions from the previous release's tables up to
db.py's metadata (the one definition of the tables), for SQLite and PostgreSQL alike.

``versions/`` holds one revision per schema change, oldest first (``r0001_baseline`` is the
schema of the release before migrations existed); ``changes`` the steps they are written
with; ``env`` is what Alembic runs. Databases are upgraded by ``storage.schema``, never by
hand. A new revision after a change to db.py: ``schema.write_revision("what changed")``
writes one from the difference (autogenerate), to be read and adjusted before committing.

Imports: compound.coordinator.storage.db
"""
