"""Stores behind the accounting seam (:mod:`ailb.accounting.store`) that live outside the
process: PostgreSQL (``postgres``, ``pg_migrations``), and :func:`open.open_store`, which picks
PostgreSQL when ``DATABASE_URL`` is set, else the embedded SQLite store."""
