"""Retention: conversations not continued, and stored responses older than
``conversations.retention_days``, are purged by a background task (like the request log's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from modelyard.config.conversations_schema import ConversationsConfig
from modelyard.store.base import Store

log = logging.getLogger("modelyard.conversations")

FIRST_PURGE_DELAY_S = 5.0


class ConversationPurger:
    """``start()`` in the lifespan once the store is open; ``aclose()`` stops it."""

    def __init__(
        self, store: Store, config: ConversationsConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.purged = 0
        """Conversations and stored responses purged by this process (a metric)."""

    async def purge_now(self, retention_days: float | None = None) -> int:
        """Delete what is older than the retention period (or ``retention_days``); returns how many."""
        days = self._config.retention_days if retention_days is None else retention_days
        deleted = await self._store.purge_conversations(self._clock() - days * 86400)
        self.purged += deleted
        if deleted:
            log.info("conversations: purged %d conversations and responses older than %g days", deleted, days)
        return deleted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="conversation-purge")

    async def _loop(self) -> None:
        await asyncio.sleep(FIRST_PURGE_DELAY_S)
        while True:
            try:
                await self.purge_now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("conversations: retention purge failed (retried next interval): %r", exc)
            await asyncio.sleep(self._config.purge_interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


__all__ = ["ConversationPurger"]
