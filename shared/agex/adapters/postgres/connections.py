"""What the Postgres adapters share: the pool they run on, the schema name they are given, and the one
translation of psycopg's errors into the error taxonomy of :mod:`agex.core.errors`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg
from psycopg import errors as pgerr
from psycopg_pool import ConnectionPool

from agex.core.errors import ConfigurationError, TransientError

__all__ = ["SCHEMA_NAME", "calling", "check_schema", "open_pool"]

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
"""Schemas we create: lower case, so the name needs no quoting in a hand-written query, and at most 63 bytes
(Postgres's identifier limit)."""

_MISCONFIGURED = (pgerr.InsufficientPrivilege, pgerr.UndefinedTable, pgerr.UndefinedColumn, pgerr.InvalidSchemaName,
                  pgerr.InvalidPassword, pgerr.InvalidAuthorizationSpecification, pgerr.InvalidCatalogName)


def check_schema(schema: str) -> str:
    if not SCHEMA_NAME.match(schema) or schema.startswith("pg_"):
        raise ValueError(f"invalid Postgres schema name {schema!r}: lower-case letters, digits and '_', "
                         f"not starting with a digit or 'pg_', at most 63 characters")
    return schema


def open_pool(dsn: str, *, max_size: int = 10, timeout_s: float = 10.0) -> ConnectionPool:
    """A pool on ``dsn``, checked first with one connection: a DSN that cannot connect (wrong host, password,
    database) is a ``ConfigurationError`` saying why now, not a pool time-out at the first request."""
    try:
        psycopg.connect(dsn, connect_timeout=max(1, int(timeout_s))).close()
    except psycopg.Error as e:
        where = psycopg.conninfo.conninfo_to_dict(dsn)
        raise ConfigurationError(
            f"cannot connect to Postgres at {where.get('host', 'localhost')}:{where.get('port', 5432)} "
            f"(database {where.get('dbname', '?')}, user {where.get('user', '?')}): {e}; check the DSN, the "
            f"server and its pg_hba.conf") from e
    return ConnectionPool(dsn, min_size=1, max_size=max_size, timeout=timeout_s, open=True, name="agex")


@contextlib.contextmanager
def calling(what: str) -> Iterator[None]:
    """Translate psycopg's errors raised in the block: a lost or refused connection, a time-out or contention
    is ``TransientError`` (retry later); missing tables, privileges or credentials are ``ConfigurationError``;
    a value Postgres cannot store (a NUL character in jsonb or text, a number out of range) is ``ValueError``.
    Anything else (a bug in a query: a syntax or integrity error) passes unchanged."""
    try:
        yield
    except _MISCONFIGURED as e:
        raise ConfigurationError(f"{what}: Postgres refused the request ({type(e).__name__}: {e}); check the "
                                 f"schema, the DSN's role and its privileges") from e
    except psycopg.DataError as e:
        raise ValueError(f"{what}: Postgres cannot store this value ({type(e).__name__}: {e}); note that jsonb "
                         f"and text hold no NUL character (\\u0000)") from e
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        raise TransientError(f"{what}: Postgres is unavailable or overloaded ({type(e).__name__}: {e})") from e
