"""Redis adapter of the limiter port: per-tool limits held across every instance, in every process, in one
Redis server (or a primary with replicas) that every instance reaches.

Layout (``prefix`` defaults to ``agex:``; tests isolate themselves with a unique one)::

    {prefix}limits:{<tool>}:slots                   hash: slot k -> "<lease end, epoch µs>|<holder>"
    {prefix}limits:{<tool>}:rate:<start>:<seconds>  string: permits taken in that window

The braces around the tool are a hash tag: both keys of one tool hash to the same cluster slot, as a script
touching both requires on a Redis Cluster.

Atomicity. ``acquire`` is one Lua script (EVALSHA, reloaded by redis-py if the server lost it), so Redis
runs it whole with no other command in between: two callers can never both count under the rate or both
claim one slot, whichever process they run in. The script applies the port's rules
(:mod:`agex.ports.limiter`): the rate permit first (refused: nothing else is done), then the holder's own
slot (re-entrance, with a fresh lease), else the first free or expired slot from a random offset that the
caller draws (the script itself stays deterministic, as replication wants). With every slot held it
returns the hash, and the caller computes the wait with :func:`agex.ports.limiter.slot_wait`. ``release``
is another script: it deletes the slot only if the permit's holder still holds it.

Time. Lease ends and windows come from the ``now`` each caller passes, never from Redis' clock: a slot is
free once its lease has ended by the caller's clock, so instances' clocks should agree to well within a
lease. Key expiry is only the garbage collector: the slots hash lives ``lease + key_grace_s`` after its
longest lease was taken, a window's counter ``key_grace_s`` after the window ends. A crashed holder's
slot is therefore free after its lease (by the ``now`` comparison) and its memory gone soon after.

Cost per call: one round trip for ``acquire`` (both limits in one script) and one for ``release``; the
script reads the tool's whole slots hash, so it is O(max_concurrent).

Durability is Redis': a restart without persistence, or a failover to a replica that had not received the
last writes, forgets slots and counters, and the limits are over-granted until the calls holding the
forgotten slots end (docs/storage.md, "The tool limiter on Redis").
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis import exceptions as rexc
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from agex.core.errors import ConfigurationError, TransientError
from agex.core.tool import ToolLimits
from agex.ports.limiter import (
    Limiter,
    Permit,
    RateWindow,
    Wait,
    check_request,
    rate_wait,
    rate_window,
    slot_wait,
)

__all__ = ["RedisLimiter"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# KEYS: the rate window's counter, the tool's slots hash.
# ARGV: permits (0: no rate limit), counter ttl ms, max_concurrent (0: no slots), holder, now µs, lease end µs,
# first slot to try, slots ttl ms.
# Reply: {0} permit without a slot, {1, k} slot k, {2} rate refused, {3, hash as HGETALL} every slot held.
_ACQUIRE = """
local permits = tonumber(ARGV[1])
if permits > 0 then
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  if used >= permits then return {2} end
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local max = tonumber(ARGV[3])
if max == 0 then return {0} end
local holder, now, offset = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[7])
local held = redis.call('HGETALL', KEYS[2])
local ends, own = {}, nil
for i = 1, #held, 2 do
  local k, v = tonumber(held[i]), held[i + 1]
  local sep = string.find(v, '|', 1, true)
  if k and sep then
    local lease_end = tonumber(string.sub(v, 1, sep - 1))
    if k < max then
      ends[k] = lease_end
      if string.sub(v, sep + 1) == holder and (own == nil or k < own) then own = k end
    elseif lease_end <= now then
      -- above a lowered max_concurrent and over: no acquire would ever reuse or free it
      redis.call('HDEL', KEYS[2], held[i])
    end
  end
end
local pick = own
if pick == nil then
  for i = 0, max - 1 do
    local k = (offset + i) % max
    if ends[k] == nil or ends[k] <= now then pick = k break end
  end
end
if pick == nil then return {3, held} end
redis.call('HSET', KEYS[2], pick, ARGV[6] .. '|' .. holder)
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[8]) then redis.call('PEXPIRE', KEYS[2], ARGV[8]) end
return {1, pick}
"""

# KEYS: the tool's slots hash. ARGV: slot, holder. Deletes the slot only if that holder still holds it.
_RELEASE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local sep = string.find(v, '|', 1, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

_GRANTED, _SLOT, _RATE_REFUSED, _SLOTS_FULL = 0, 1, 2, 3

_REFUSED = (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError,
            rexc.AuthenticationWrongNumberOfArgsError)
"""Credentials or ACLs: retrying cannot help, the URL or the Redis user's rights must change."""
_TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError, rexc.OutOfMemoryError,
              rexc.TryAgainError, rexc.ClusterDownError)
"""Down, loading, unreachable, mid-failover (writes sent to a replica) or out of memory: worth retrying."""


class RedisLimiter(Limiter):
    """Per-tool limits in Redis.

    ``client``: a ``redis.Redis`` (bytes or decoded responses alike); :meth:`from_url` makes one with short
    timeouts. ``prefix`` starts every key. ``key_grace_s``: how long keys outlive the last lease or window
    they hold, so that a caller whose clock runs behind Redis' still finds a live slot in place.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "agex:", key_grace_s: float = 60.0) -> None:
        if not key_grace_s >= 0:
            raise ConfigurationError(f"key_grace_s must be at least 0, not {key_grace_s}")
        self._client = client
        self._prefix = f"{prefix}limits:"
        self._grace_ms = math.ceil(key_grace_s * 1000)
        # registering sends nothing: the first call loads each script (EVALSHA, then SCRIPT LOAD on NOSCRIPT)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "agex:", timeout_s: float = 2.0, retries: int = 2,
                 key_grace_s: float = 60.0) -> RedisLimiter:
        """A limiter on ``redis://[[user]:password@]host:port/db`` (``rediss://`` for TLS, ``unix://`` for a
        socket). A call waits ``timeout_s`` at most per try and is tried ``1 + retries`` times on connection
        errors and timeouts before it raises ``TransientError``: a step should give up and be retried by
        Cloud Tasks rather than hang. Options in the URL's query (``?socket_timeout=``) take precedence."""
        try:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
            )
        except ValueError as e:
            raise ConfigurationError(f"not a usable Redis URL for the limiter ({e}); expected "
                                     f"redis://host:port/db, rediss://... or unix://...") from e
        return cls(client, prefix=prefix, key_grace_s=key_grace_s)

    def close(self) -> None:
        """Close the client's connections (the client given to the constructor included)."""
        self._client.close()

    def _slots_key(self, tool: str) -> str:
        return f"{self._prefix}{{{tool}}}:slots"

    def _rate_key(self, tool: str, window: RateWindow) -> str:
        return f"{self._prefix}{{{tool}}}:rate:{window.start}:{window.seconds}"

    # --- port -------------------------------------------------------------------------------------------

    def acquire(self, tool: str, limits: ToolLimits, holder: str, now: datetime, lease_s: float) -> Permit | Wait:
        check_request(limits, now, lease_s)
        if not limits.any:
            return Permit(tool, holder)
        window = rate_window(limits.per_second, now) if limits.per_second is not None else None
        now_us = (now - _EPOCH) // _US
        lease_us = round(lease_s * 1_000_000)
        max_concurrent = limits.max_concurrent or 0
        args = (
            window.permits if window else 0,
            max(1, math.ceil((window.end - now.timestamp()) * 1000)) + self._grace_ms if window else 1,
            max_concurrent,
            holder,
            now_us,
            now_us + lease_us,
            random.randrange(max_concurrent) if max_concurrent else 0,
            max(1, math.ceil(lease_us / 1000)) + self._grace_ms,
        )
        slots = self._slots_key(tool)
        # without a rate limit the script never touches KEYS[1]: naming the slots key keeps one hash slot
        keys = (self._rate_key(tool, window) if window else slots, slots)
        with _calling(f"taking a permit of tool {tool}"):
            reply = self._acquire(keys=keys, args=args)
        code = int(reply[0])
        if code == _GRANTED:
            return Permit(tool, holder)
        if code == _SLOT:
            return Permit(tool, holder, int(reply[1]))
        if code == _RATE_REFUSED:
            assert window is not None and limits.per_second is not None
            return rate_wait(tool, limits.per_second, window, now)
        return slot_wait(tool, max_concurrent, _held(reply[1], now, now_us), now)

    def release(self, permit: Permit) -> None:
        if permit.slot is None:
            return
        with _calling(f"releasing slot {permit.slot} of tool {permit.tool}"):
            self._release(keys=(self._slots_key(permit.tool),), args=(permit.slot, permit.holder))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _held(flat: list[Any], now: datetime, now_us: int) -> dict[int, tuple[str, datetime]]:
    """The slots hash as the port's rules read it: slot -> (holder, lease end), the end exact to the µs."""
    held: dict[int, tuple[str, datetime]] = {}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        end_us, _, holder = _text(value).partition("|")
        held[int(_text(field))] = (holder, now + (int(end_us) - now_us) * _US)
    return held


@contextmanager
def _calling(what: str) -> Iterator[None]:
    """Redis' errors as agex errors, ``what`` naming the call that failed."""
    try:
        yield
    except _REFUSED as e:
        raise ConfigurationError(f"{what}: Redis refused the limiter's credentials or commands ({e}); the "
                                 f"user needs EVALSHA, SCRIPT LOAD and access to the limiter's keys") from e
    except _TRANSIENT as e:
        raise TransientError(f"{what}: Redis is unavailable ({type(e).__name__}: {e})") from e
    except rexc.ResponseError as e:
        if str(e).startswith("WRONGTYPE"):
            raise ConfigurationError(f"{what}: a key of the limiter holds another program's data ({e}); give "
                                     f"the limiter a prefix of its own") from e
        raise TransientError(f"{what}: unexpected Redis error ({e})") from e
    except rexc.RedisError as e:
        raise TransientError(f"{what}: unexpected Redis error ({type(e).__name__}: {e})") from e
