"""The key cache of :class:`Authenticator` on a real SQLite store: one read for many concurrent
callers of an uncached key, reads ahead of expiry for a key in use (so no request waits on the
database in steady traffic), and revocations that a read already under way cannot undo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelyard.errors import AuthenticationError
from modelyard.policy.auth import Authenticator
from modelyard.policy.keys import generate_key, hash_key, key_hint
from modelyard.store.base import KeyRecord, Role, Store
from modelyard.store.factory import store_for


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = store_for(f"sqlite:///{tmp_path / 'keys.db'}")
    await store.open()
    yield store
    await store.aclose()


async def new_key(store: Store) -> str:
    key = generate_key()
    await store.insert_key(
        KeyRecord(id="k1", hash=hash_key(key), hint=key_hint(key), role=Role.KEY_HOLDER, created_at=1)
    )
    return key


async def test_concurrent_callers_of_an_uncached_key_share_one_read(store: Store) -> None:
    auth = Authenticator("master", store)
    key = await new_key(store)
    principals = await asyncio.gather(
        *(auth.authenticate({"authorization": f"Bearer {key}"}) for _ in range(50))
    )
    assert {p.key_id for p in principals} == {"k1"}
    assert auth.reads == 1


async def test_a_key_in_use_is_read_again_before_it_expires(store: Store) -> None:
    """TTL 0.4 s: a request in the last quarter is served from the cache and starts a background
    read; a request after the first entry's expiry then finds the fresh one and does not wait."""
    auth = Authenticator("master", store, cache_ttl_s=0.4)
    key = await new_key(store)
    headers = {"authorization": f"Bearer {key}"}
    await auth.authenticate(headers)
    assert auth.reads == 1
    await asyncio.sleep(0.33)  # < 0.1 s (a quarter) left
    await auth.authenticate(headers)
    assert auth.reads == 2  # started in the background; this request did not wait for it
    await asyncio.sleep(0.12)  # the first entry has expired; the one read ahead has not
    await auth.authenticate(headers)
    assert auth.reads == 2


class ReadThenWait:
    """The real store, whose key reads hold their answer until ``release`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        record = await self.store.key_by_hash(key_hash)
        self.read.set()
        await self.release.wait()
        return record


async def test_a_revocation_wins_over_a_read_already_under_way(store: Store) -> None:
    """A read that found the key active, then a revocation (and the admin API's forget) before the
    read returns: the request that waited on the read passes, but what it found is not cached."""
    gated = ReadThenWait(store)
    auth = Authenticator("master", gated)  # type: ignore[arg-type]
    key = await new_key(store)
    headers = {"x-api-key": key}
    reading = asyncio.create_task(auth.authenticate(headers))
    await gated.read.wait()  # the read has found the key active
    assert await store.revoke_key("k1", at=1.0)
    auth.forget(hash_key(key))
    gated.release.set()
    assert (await reading).key_id == "k1"  # it began before the revocation
    with pytest.raises(AuthenticationError):
        await auth.authenticate(headers)  # read again, not served from the stale answer
    assert auth.reads == 2


async def test_unknown_well_formed_keys_are_read_once_and_rejected(store: Store) -> None:
    auth = Authenticator("master", store)
    stranger = generate_key()
    results = await asyncio.gather(
        *(auth.authenticate({"api-key": stranger}) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert auth.reads == 1


async def test_close_waits_for_a_read_under_way(store: Store) -> None:
    """Shutdown: a background read started ahead of expiry finishes before the store closes."""
    auth = Authenticator("master", store, cache_ttl_s=0.2)
    key = await new_key(store)
    await auth.authenticate({"x-api-key": key})
    await asyncio.sleep(0.16)
    await auth.authenticate({"x-api-key": key})  # starts the read ahead
    assert auth.reads == 2
    await auth.aclose()
    assert not auth._reading
