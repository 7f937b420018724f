"""The conversation tables on SQLite and PostgreSQL (a throw-away schema): create-once ownership,
atomic appends (also concurrent ones), trimming to ``max_turns``, scoped listing, deletion, the
retention purge and ``previous_response_id`` chains."""

from __future__ import annotations

import asyncio

from modelyard.config.conversations_schema import ConversationsConfig
from modelyard.conversations.model import (
    ConversationRecord,
    ConversationScope,
    Owner,
    StoredResponse,
    TurnOptions,
)
from modelyard.conversations.retention import ConversationPurger
from modelyard.store._conversations_sql import PURGE_CHUNK
from modelyard.store.base import Store
from tests.store._support import Backend, run_sync

ALICE = Owner("key-a", "team-a", "user-a", "org-a")
BOB = Owner("key-b", "team-b", None, None)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _run(backend: Backend, test: object) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            await test(store)  # type: ignore[operator]
        finally:
            await store.aclose()

    run_sync(main)


def test_create_append_trim_and_delete(backend: Backend) -> None:
    async def check(store: Store) -> None:
        assert await store.load_conversation("c1") is None
        created = await store.create_conversation(ConversationRecord("c1", ALICE, 10.0, 10.0))
        assert created.owner == ALICE and created.turns == 0
        # A second creator does not take it over: the stored owner wins.
        again = await store.create_conversation(ConversationRecord("c1", BOB, 11.0, 11.0))
        assert again.owner == ALICE
        for turn in range(1, 6):
            ok = await store.append_conversation(
                "c1",
                [_user(f"q{turn}"), {"role": "assistant", "content": f"a{turn}"}],
                TurnOptions(now=100.0 + turn, max_turns=3, system="sys" if turn == 1 else None),
            )
            assert ok
        loaded = await store.load_conversation("c1")
        assert loaded is not None
        record, items = loaded
        assert record.turns == 5 and record.system == "sys" and record.updated_at == 105.0
        assert [i.message["content"] for i in items] == ["q3", "a3", "q4", "a4", "q5", "a5"]
        assert [i.turn for i in items] == [3, 3, 4, 4, 5, 5]
        assert await store.delete_conversation("c1")
        assert await store.load_conversation("c1") is None
        assert not await store.delete_conversation("c1")
        assert not await store.append_conversation("c1", [_user("x")], TurnOptions(now=1.0, max_turns=3))

    _run(backend, check)


def test_concurrent_appends_keep_every_turn_whole(backend: Backend) -> None:
    async def check(store: Store) -> None:
        await store.create_conversation(ConversationRecord("busy", ALICE, 1.0, 1.0))

        async def turn(n: int) -> None:
            await store.append_conversation(
                "busy",
                [_user(f"q{n}"), {"role": "assistant", "content": f"a{n}"}],
                TurnOptions(now=2.0, max_turns=100),
            )

        await asyncio.gather(*(turn(n) for n in range(20)))
        loaded = await store.load_conversation("busy")
        assert loaded is not None
        record, items = loaded
        assert record.turns == 20 and len(items) == 40
        assert [i.seq for i in items] == list(range(1, 41))
        for first, second in zip(items[::2], items[1::2], strict=True):
            assert first.turn == second.turn and first.message["content"][1:] == second.message["content"][1:]

    _run(backend, check)


def test_scoped_listing_and_purge(backend: Backend) -> None:
    async def check(store: Store) -> None:
        await store.create_conversation(ConversationRecord("a-old", ALICE, 1.0, 1.0))
        await store.create_conversation(ConversationRecord("a-new", ALICE, 50.0, 50.0))
        await store.create_conversation(ConversationRecord("b", BOB, 60.0, 60.0))
        everyone = await store.list_conversations(ConversationScope())
        assert [c.id for c in everyone] == ["b", "a-new", "a-old"]
        mine = await store.list_conversations(ConversationScope(key_ids=("key-a",)))
        assert [c.id for c in mine] == ["a-new", "a-old"]
        team = await store.list_conversations(ConversationScope(team_id="team-b"))
        assert [c.id for c in team] == ["b"]
        page = await store.list_conversations(ConversationScope(), limit=1, before=55.0)
        assert [c.id for c in page] == ["a-new"]
        await store.put_response(
            StoredResponse("resp_old", ALICE, 2.0, None, "m", [_user("x")], {"id": "resp_old"})
        )
        assert await store.purge_conversations(10.0) == 2  # a-old and resp_old
        assert await store.load_conversation("a-old") is None
        assert await store.response_chain("resp_old", 10) == []
        assert {c.id for c in await store.list_conversations(ConversationScope())} == {"a-new", "b"}

    _run(backend, check)


def test_response_chains(backend: Backend) -> None:
    async def check(store: Store) -> None:
        previous = None
        for n in range(5):
            await store.put_response(
                StoredResponse(
                    f"r{n}", ALICE, float(n), previous, "m", [_user(f"t{n}")], {"id": f"r{n}"}, [{"id": "i"}]
                )
            )
            previous = f"r{n}"
        chain = await store.response_chain("r4", 10)
        assert [r.id for r in chain] == ["r4", "r3", "r2", "r1", "r0"]
        assert chain[0].input_items == [{"id": "i"}] and chain[0].messages == [_user("t4")]
        assert [r.id for r in await store.response_chain("r4", 2)] == ["r4", "r3"]
        assert await store.delete_response("r2")
        assert [r.id for r in await store.response_chain("r4", 10)] == ["r4", "r3"]
        assert await store.response_chain("nope", 10) == []
        assert not await store.delete_response("r2")

    _run(backend, check)


def test_first_turn_creates_and_a_foreign_owner_blocks(backend: Backend) -> None:
    async def check(store: Store) -> None:
        alice_only = ConversationScope(key_ids=("key-a",))
        first = TurnOptions(now=5.0, max_turns=10, system="s", create_for=ALICE, scope=alice_only)
        assert await store.append_conversation("new", [_user("hi")], first)
        loaded = await store.load_conversation("new")
        assert loaded is not None and loaded[0].owner == ALICE and loaded[0].turns == 1
        assert loaded[0].system == "s" and [i.message for i in loaded[1]] == [_user("hi")]
        # Bob's first turn on the same id (a race he lost): nothing is written.
        bob = TurnOptions(now=6.0, max_turns=10, create_for=BOB, scope=ConversationScope(key_ids=("key-b",)))
        assert not await store.append_conversation("new", [_user("mine now")], bob)
        loaded = await store.load_conversation("new")
        assert loaded is not None and loaded[0].owner == ALICE and len(loaded[1]) == 1

    _run(backend, check)


def test_the_retention_purge_uses_retention_days(backend: Backend) -> None:
    async def check(store: Store) -> None:
        day = 86400.0
        now = 100 * day
        await store.create_conversation(ConversationRecord("stale", ALICE, now - 40 * day, now - 40 * day))
        await store.create_conversation(ConversationRecord("fresh", ALICE, now - 40 * day, now - 2 * day))
        await store.put_response(StoredResponse("resp_stale", ALICE, now - 31 * day, None, "m", [], {}))
        await store.put_response(StoredResponse("resp_fresh", ALICE, now - 29 * day, None, "m", [], {}))
        purger = ConversationPurger(store, ConversationsConfig(retention_days=30), clock=lambda: now)
        assert await purger.purge_now() == 2
        assert await store.load_conversation("stale") is None
        assert await store.load_conversation("fresh") is not None
        assert [r.id for r in await store.response_chain("resp_fresh", 5)] == ["resp_fresh"]
        assert await store.response_chain("resp_stale", 5) == []
        assert purger.purged == 2 and await purger.purge_now() == 0

    _run(backend, check)


def test_the_purge_works_through_more_than_one_chunk(backend: Backend) -> None:
    async def check(store: Store) -> None:
        count = PURGE_CHUNK + 50
        await asyncio.gather(
            *(
                store.append_conversation(
                    f"old-{n}", [_user("x")], TurnOptions(now=1.0, max_turns=5, create_for=ALICE)
                )
                for n in range(count)
            )
        )
        assert await store.purge_conversations(2.0) == count
        assert await store.list_conversations(ConversationScope(), limit=10) == []

    _run(backend, check)
