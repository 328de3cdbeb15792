"""Choosing the stacks a team already runs is one setting each (docs/storage.md): ``AGEX_STORE`` puts run state and
the spend ledger on Postgres, ``AGEX_LIMITER`` the tools' limits on Redis, in the composition root itself."""

from __future__ import annotations

import uuid

from agex.app.backends import Backends
from agex.app.settings import Settings
from agex.tools import ToolLimits

from .test_checkpoint_store import make_head


def test_the_settings_put_run_state_on_postgres_and_tool_limits_on_redis(postgres_dsn: str, redis_url: str) -> None:
    from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore
    from agex.adapters.postgres.spend_ledger import PostgresSpendLedger
    from agex.adapters.redis.limiter import RedisLimiter

    settings = Settings.model_construct(**{**Settings().model_dump(), "store": postgres_dsn,
                                           "store_schema": f"s{uuid.uuid4().hex[:8]}", "limiter": redis_url})
    backends = Backends.gcp(settings)
    store, spend, limiter = backends.store(), backends.spend(), backends.limiter()
    assert isinstance(store, PostgresCheckpointStore) and store is backends.store()
    assert isinstance(spend, PostgresSpendLedger) and isinstance(limiter, RedisLimiter)
    head = store.create_run(make_head(), [])
    assert store.get_run(head.tenant, head.run_id) == head
    # long-term memory follows the run state, in the same database and schema, unless told otherwise
    from agex.adapters.postgres.memory import PostgresGraphStore, PostgresVectorStore

    assert isinstance(backends.vectors(), PostgresVectorStore) and isinstance(backends.graph(), PostgresGraphStore)
    assert backends.vectors().dimensions == backends.embedder().dimensions == 384
    permit = limiter.acquire(f"t{uuid.uuid4().hex[:6]}", ToolLimits(max_concurrent=1), "h", head.created_at, 10)
    limiter.release(permit)  # type: ignore[arg-type]


def test_without_the_settings_both_stay_on_firestore() -> None:
    settings = Settings()
    assert settings.store == "" and settings.limiter == "firestore"


def test_the_sweep_deletes_postgres_rows_past_their_retention(postgres_dsn: str) -> None:
    from datetime import timedelta

    from agex.adapters.inmemory.task_queue import InMemoryTaskQueue
    from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore
    from agex.core.agent import AgentRegistry
    from agex.core.clock import ManualClock, SequentialIds
    from agex.engine.runs import RunService

    store = PostgresCheckpointStore(postgres_dsn, schema=f"s{uuid.uuid4().hex[:8]}")
    head = store.create_run(make_head(), [])
    clock = ManualClock(head.expire_at + timedelta(seconds=1))
    service = RunService(store=store, queue=InMemoryTaskQueue(), agents=AgentRegistry([]), clock=clock,
                         ids=SequentialIds())
    report = service.sweep()
    assert report.deleted >= 1 and store.get_run(head.tenant, head.run_id) is None
