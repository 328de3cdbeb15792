"""What the Redis limiter does beyond the port's conformance suite: its scripts survive ``SCRIPT FLUSH``, its
keys expire, Redis' failures become agex errors (refused credentials a configuration error), and a restarted Redis has forgotten every slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from agex.adapters.redis.limiter import RedisLimiter
from agex.core.errors import ConfigurationError, TransientError
from agex.dev.emulators.gcloud import free_port
from agex.dev.emulators.redis_server import start_redis
from agex.ports.limiter import Permit, Wait
from agex.tools import ToolLimits

from .conftest import unique

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
SLOTS_1 = ToolLimits(max_concurrent=1)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix() -> str:
    return unique("r") + ":"


def test_scripts_are_loaded_again_after_script_flush(client: redis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(client, prefix=prefix)
    held = limiter.acquire("t", SLOTS_1, "h1", T0, 60)
    assert isinstance(held, Permit)
    client.script_flush()  # what a restart or a failover to a fresh replica does to the script cache
    assert isinstance(limiter.acquire("t", SLOTS_1, "h2", T0, 60), Wait)
    client.script_flush()
    limiter.release(held)
    assert isinstance(limiter.acquire("t", SLOTS_1, "h2", T0, 60), Permit)


def test_key_layout_and_expiry(client: redis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(client, prefix=prefix, key_grace_s=5)
    slots, rate = f"{prefix}limits:{{t}}:slots", f"{prefix}limits:{{t}}:rate:{int(T0.timestamp())}:1"
    held = limiter.acquire("t", ToolLimits(max_concurrent=2, per_second=3),
                           "h|1", T0 + timedelta(milliseconds=250), 10)
    assert isinstance(held, Permit)
    assert client.hgetall(slots) == {str(held.slot).encode(): f"{int(T0.timestamp()) * 10**6 + 10_250_000}|h|1".encode()}
    assert 14_000 < client.pttl(slots) <= 15_000  # the lease and the grace
    assert client.get(rate) == b"1"
    assert 5_000 < client.pttl(rate) <= 5_750  # the rest of the window and the grace
    limiter.release(held)
    assert client.exists(slots) == 0  # the last slot given back: no key left
    # a holder that crashed: its slot's key goes once its lease and the grace are over
    short = RedisLimiter(client, prefix=prefix, key_grace_s=0)
    assert isinstance(short.acquire("gone", SLOTS_1, "h1", datetime.now(UTC), 0.2), Permit)
    time.sleep(0.4)
    assert client.exists(f"{prefix}limits:{{gone}}:slots") == 0


def test_slots_above_a_lowered_limit_are_forgotten_once_over(client: redis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(client, prefix=prefix)
    limits = ToolLimits(max_concurrent=3)
    for h in ("h1", "h2", "h3"):
        assert isinstance(limiter.acquire("t", limits, h, T0, 10), Permit)
    # max_concurrent lowered to 1 after the leases ended: only slot 0 is left in the hash
    assert isinstance(limiter.acquire("t", SLOTS_1, "h4", T0 + timedelta(seconds=11), 10), Permit)
    assert client.hkeys(f"{prefix}limits:{{t}}:slots") == [b"0"]


def test_a_client_with_decoded_responses(redis_url: str, prefix: str) -> None:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RedisLimiter(c, prefix=prefix)
    assert isinstance(limiter.acquire("t", SLOTS_1, "h|1", T0, 10), Permit)
    w = limiter.acquire("t", SLOTS_1, "h2", T0 + timedelta(seconds=4), 10)
    assert isinstance(w, Wait) and w.seconds == pytest.approx(6, abs=0.001)
    c.close()


def test_a_key_holding_other_data_is_a_configuration_error(client: redis.Redis, prefix: str) -> None:
    client.set(f"{prefix}limits:{{t}}:slots", "someone else's")
    with pytest.raises(ConfigurationError, match="prefix of its own"):
        RedisLimiter(client, prefix=prefix).acquire("t", SLOTS_1, "h1", T0, 10)


def test_the_documented_acl_suffices_and_refusals_are_configuration_errors(client: redis.Redis, redis_url: str,
                                                                          prefix: str) -> None:
    user, host_port = unique("agex"), redis_url.removeprefix("redis://").removesuffix("/0")
    # the user of docs/storage.md, limited to the keys of its prefix
    client.execute_command("ACL", "SETUSER", user, "on", ">pw", f"~{prefix}*", "+evalsha", "+script|load", "+ping",
                           "+get", "+incr", "+pexpire", "+pttl", "+hget", "+hgetall", "+hset", "+hdel")
    limits = ToolLimits(max_concurrent=2, per_second=5)
    allowed = RedisLimiter.from_url(f"redis://{user}:pw@{host_port}/0", prefix=prefix)
    client.script_flush()  # the user loads the scripts itself
    held = allowed.acquire("t", limits, "h1", T0, 10)
    assert isinstance(held, Permit)
    allowed.release(held)
    others = RedisLimiter.from_url(f"redis://{user}:pw@{host_port}/0", prefix="elsewhere:")
    with pytest.raises(ConfigurationError, match="no permissions"):
        others.acquire("t", limits, "h1", T0, 10)
    wrong = RedisLimiter.from_url(f"redis://{user}:wrong@{host_port}/0", prefix=prefix)
    with pytest.raises(ConfigurationError, match="username-password"):
        wrong.acquire("t", limits, "h1", T0, 10)
    for limiter in (allowed, others, wrong):
        limiter.close()


def test_a_url_redis_cannot_use_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="redis://host:port/db"):
        RedisLimiter.from_url("http://127.0.0.1:6379/0")


def test_a_refused_connection_is_transient_and_quick() -> None:
    limiter = RedisLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=unique("r") + ":")
    started = time.monotonic()
    with pytest.raises(TransientError, match="Redis is unavailable"):
        limiter.acquire("t", SLOTS_1, "h1", T0, 10)
    with pytest.raises(TransientError):
        limiter.release(Permit("t", "h1", 0))
    assert time.monotonic() - started < 5  # a few quick retries, not redis-py's default of ten
    limiter.close()


def test_a_restarted_redis_has_forgotten_every_slot() -> None:
    """Without persistence a restart over-grants: the slot held before it is given to another holder."""
    server = start_redis()
    try:
        limiter = RedisLimiter.from_url(server.url, prefix="restart:")
        held = limiter.acquire("t", SLOTS_1, "h1", T0, 60)
        assert isinstance(held, Permit)
        server.stop()
        with pytest.raises(TransientError):
            limiter.acquire("t", SLOTS_1, "h2", T0, 60)
        server = start_redis(server.port)
        assert isinstance(limiter.acquire("t", SLOTS_1, "h2", T0 + timedelta(seconds=1), 60), Permit)
        limiter.release(held)  # the forgotten holder's release is a no-op
        assert isinstance(limiter.acquire("t", SLOTS_1, "h3", T0 + timedelta(seconds=1), 60), Wait)
        limiter.close()
    finally:
        server.stop()
