"""CachedSecrets (TTL cache in front of the secret store) and scrub (secret values out of tool outputs)."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from agex.adapters.inmemory.secret_store import InMemorySecretStore
from agex.core.clock import ManualClock
from agex.core.errors import SecretAccessDenied, SecretUnavailable
from agex.core.scrub import encoded_forms, scrub
from agex.ports.secret_store import CachedSecrets, SecretStore

AGENT = "agent@agex-local.iam.gserviceaccount.com"
OTHER = "other@agex-local.iam.gserviceaccount.com"


class Counting(SecretStore):
    def __init__(self, inner: SecretStore) -> None:
        self.inner, self.calls = inner, 0

    def access(self, identity: str, secret: str) -> str:
        self.calls += 1
        return self.inner.access(identity, secret)


@pytest.fixture
def mem() -> InMemorySecretStore:
    m = InMemorySecretStore()
    m.add_version("api-key", "key-one")
    m.grant("api-key", AGENT)
    return m


def test_cache_serves_until_ttl_then_picks_up_rotation(mem: InMemorySecretStore) -> None:
    clock = ManualClock()
    inner = Counting(mem)
    cached = CachedSecrets(inner, ttl_s=60, clock=clock)
    assert cached.access(AGENT, "api-key") == "key-one"
    mem.add_version("api-key", "key-two")
    clock.advance(59)
    assert cached.access(AGENT, "api-key") == "key-one"
    assert inner.calls == 1
    clock.advance(1)
    assert cached.access(AGENT, "api-key") == "key-two"
    assert inner.calls == 2


def test_cache_is_per_identity(mem: InMemorySecretStore) -> None:
    cached = CachedSecrets(mem, ttl_s=60, clock=ManualClock())
    assert cached.access(AGENT, "api-key") == "key-one"
    # A value cached for one agent is never served to another without its own grant.
    with pytest.raises(SecretAccessDenied):
        cached.access(OTHER, "api-key")


def test_errors_are_not_cached(mem: InMemorySecretStore) -> None:
    clock = ManualClock()
    inner = Counting(mem)
    cached = CachedSecrets(inner, ttl_s=60, clock=clock)
    with pytest.raises(SecretAccessDenied):
        cached.access(OTHER, "api-key")
    mem.grant("api-key", OTHER)
    assert cached.access(OTHER, "api-key") == "key-one"

    v = mem.add_version("fresh", "value-x")
    mem.grant("fresh", AGENT)
    mem.disable("fresh", v)
    with pytest.raises(SecretUnavailable):
        cached.access(AGENT, "fresh")
    mem.enable("fresh", v)
    assert cached.access(AGENT, "fresh") == "value-x"
    assert inner.calls == 4


def test_forget_drops_cached_values(mem: InMemorySecretStore) -> None:
    cached = CachedSecrets(mem, ttl_s=60, clock=ManualClock())
    assert cached.access(AGENT, "api-key") == "key-one"
    mem.add_version("api-key", "key-two")
    cached.forget(secret="api-key")
    assert cached.access(AGENT, "api-key") == "key-two"


def test_cache_is_thread_safe(mem: InMemorySecretStore) -> None:
    cached = CachedSecrets(mem, ttl_s=60)
    results: list[str] = []

    def read() -> None:
        for _ in range(200):
            results.append(cached.access(AGENT, "api-key"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["key-one"] * 1600


# --- scrub ----------------------------------------------------------------------------------------------

SECRET = "s3cr3t/t0k+en?&="  # has characters every encoding changes
SECRETS = {"api-key": SECRET}
R = "[secret:api-key]"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def ub64(s: str) -> str:
    return base64.urlsafe_b64encode(s.encode()).decode()


@pytest.mark.parametrize("encoded", [
    SECRET,
    b64(SECRET), b64(SECRET).rstrip("="),
    ub64(SECRET), ub64(SECRET).rstrip("="),
    SECRET.encode().hex(), SECRET.encode().hex().upper(),
    quote(SECRET), quote(SECRET, safe=""), quote_plus(SECRET),
    json.dumps(SECRET)[1:-1],
], ids=["plain", "b64", "b64-nopad", "b64url", "b64url-nopad", "hex", "HEX", "quote", "quote-safe",
        "quote_plus", "json"])
def test_scrub_covers_each_encoding(encoded: str) -> None:
    out = scrub(f"before {encoded} after", SECRETS)
    assert out == f"before {R} after"


def test_scrub_json_escaped_forms() -> None:
    value = 'pa"ss\\wörd\n'
    escaped = json.dumps({"token": value})  # a tool returning JSON text
    out = scrub(escaped, {"pw": value})
    assert out == '{"token": "[secret:pw]"}'
    assert scrub(json.dumps(value, ensure_ascii=False), {"pw": value}) == '"[secret:pw]"'


def test_scrub_the_stripped_value_too() -> None:
    # Secrets created with `echo value | gcloud secrets create` end in a newline that tools strip.
    assert scrub("Bearer tok-12345", {"t": "tok-12345\n"}) == "Bearer [secret:t]"


def test_scrub_base64_inside_basic_auth_at_any_offset() -> None:
    password = "correct-horse-battery"
    for user in ("u", "us", "usr"):  # the three byte alignments of the password inside the encoding
        header = "Basic " + b64(f"{user}:{password}")
        out = scrub({"headers": {"Authorization": header}}, {"pw": password})
        got = out["headers"]["Authorization"]
        assert "[secret:pw]" in got, user
        # At most a couple of edge characters of the encoding survive; the long run is gone.
        assert len(got.replace("Basic ", "").replace("[secret:pw]", "")) <= len(b64(user + ":")) + 2


def test_scrub_nested_structures_and_keys() -> None:
    value: dict[str, Any] = {
        "ok": 1, "flag": True, "none": None, "pi": 3.5,
        "list": ["x", f"token={SECRET}", {"deep": [b64(SECRET)]}],
        f"key-{SECRET}": "v",
        "tuple": (SECRET,),
    }
    out = scrub(value, SECRETS)
    assert out == {
        "ok": 1, "flag": True, "none": None, "pi": 3.5,
        "list": ["x", f"token={R}", {"deep": [R]}],
        f"key-{R}": "v",
        "tuple": (R,),
    }
    assert value["list"][1] == f"token={SECRET}"  # the input is untouched: a deep copy
    assert SECRET not in json.dumps(out)


def test_scrub_numbers_that_spell_a_secret() -> None:
    assert scrub({"pin": 98765432, "n": 7}, {"pin": "98765432"}) == {"pin": "[secret:pin]", "n": 7}


def test_scrub_leaves_other_text_intact_and_copies() -> None:
    value = {"text": "nothing to hide here: s3cr3t is not the secret", "items": [1, 2]}
    out = scrub(value, SECRETS)
    assert out == value and out is not value and out["items"] is not value["items"]
    assert scrub("anything", {}) == "anything"


def test_scrub_ignores_values_too_short_to_scrub() -> None:
    assert encoded_forms("abc") == set()
    assert scrub("a b c abc", {"short": "abc"}) == "a b c abc"


def test_scrub_several_secrets_and_replacement_not_rescanned() -> None:
    # A secret whose value is "secret" must not mangle the markers already written.
    secrets = {"a": "secret", "b": "alpha-beta-gamma"}
    out = scrub("secret and alpha-beta-gamma and c2VjcmV0", secrets)
    assert out == "[secret:a] and [secret:b] and [secret:a]"


def test_scrub_prefers_the_longest_match() -> None:
    # One value inside another: the longer secret is reported, not a fragment of it.
    out = scrub("x=prefix-inner-suffix", {"inner": "inner", "outer": "prefix-inner-suffix"})
    assert out == "x=[secret:outer]"
