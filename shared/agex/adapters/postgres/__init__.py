"""Postgres adapters (psycopg 3 over a ``psycopg_pool.ConnectionPool``): run state, checkpoints and the spend
ledger in one schema per deployment (docs/storage.md, "Run state on Postgres").

Nothing is imported here, so importing a module of this package costs only that module's imports:
``checkpoint_store.PostgresCheckpointStore``, ``spend_ledger.PostgresSpendLedger``, ``retention.delete_expired``.
"""
