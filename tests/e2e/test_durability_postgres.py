"""The crash and redelivery suite again, with run state on Postgres (``AGEX_STORE``; docs/storage.md): the same
step functions on a second local stack whose checkpoint store and spend ledger are a real Postgres server, killed
at the same failpoints and sent the same duplicates. Each effect still happens once and no event is written twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agex.dev.emulators import postgres_server

from . import test_durability as suite
from .conftest import E2E, WeatherApi, stack_of


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory: pytest.TempPathFactory, weather: tuple[WeatherApi, str],
                mcp_url: str) -> Iterator[E2E]:
    with postgres_server.start_postgres() as server:
        yield from stack_of(tmp_path_factory, weather, mcp_url,
                            {"AGEX_STORE": server.dsn, "AGEX_STORE_SCHEMA": "e2e"})


def test_the_run_state_is_on_postgres(on_postgres: E2E) -> None:
    import psycopg

    run = on_postgres.client.start_run("ticker", "tick 2")
    assert on_postgres.wait(run["run_id"])["status"] == "succeeded"
    dsn = on_postgres.stack.config.extra_env["AGEX_STORE"]
    with psycopg.connect(dsn) as conn:
        (events,) = conn.execute("SELECT count(*) FROM e2e.events WHERE run_id = %s", (run["run_id"],)).fetchone()
    assert events == len(on_postgres.events(run["run_id"])) > 0


def test_duplicate_and_stale_deliveries_change_nothing(on_postgres: E2E) -> None:
    suite.test_duplicate_and_stale_deliveries_change_nothing(on_postgres)


@pytest.mark.parametrize("points", [("step.after_claim",),
                                    ("step.after_model", "step.after_tool", "step.after_commit")])
def test_a_step_killed_mid_way_is_retried_and_the_run_succeeds_with_each_effect_once(
        on_postgres: E2E, points: tuple[str, ...]) -> None:
    suite.test_a_step_killed_mid_way_is_retried_and_the_run_succeeds_with_each_effect_once(on_postgres, points)


def test_a_run_whose_task_was_lost_is_recovered_by_the_sweep(on_postgres: E2E) -> None:
    suite.test_a_run_whose_task_was_lost_is_recovered_by_the_sweep(on_postgres)
