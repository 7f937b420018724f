"""Request (RPM) and token (TPM) rate limits over a sliding window, in memory or shared through Redis.

The interface is one small async class, :class:`RateLimiter`::

    decision = await limiter.acquire([
        LimitCheck("key", key_id, "rpm", limit=100, cost=1),
        LimitCheck("key", key_id, "tpm", limit=50_000, cost=prompt_estimate + max_tokens),
        LimitCheck("team", team_id, "tpm", limit=400_000, cost=prompt_estimate + max_tokens),
    ])
    if not decision.allowed:
        ...  # 429 with Retry-After: ceil(decision.retry_after_s), naming decision.violated
    ...      # after the response: settle the TPM reservation to the actual tokens
    await limiter.adjust(tpm_check, actual_tokens - tpm_check.cost, at=decision.at)

**Increment on check, all or nothing.** ``acquire`` checks every counter of the request and, only if
all of them fit, increments all of them, atomically (one event-loop step in memory; one Lua script in
Redis). A request that its team limit rejects does not consume its key's quota, and no two
concurrent requests can both take the last slot (the "check, then increment later" race that let
LiteLLM admit 544 requests under an RPM limit of 100; RELIABILITY.md C4).

**The window.** A sliding window of ``window_s`` seconds (60 by default) that holds the limit
exactly: at no instant do the admissions of the last ``window_s`` seconds add up to more than the
limit. A fixed window lets twice the limit through around a boundary, and a token bucket lets
``limit + refill`` through in one window; neither meets C4 (admitted ∈ [100, 102]). Each counter
keeps sub-buckets of ``bucket_s`` seconds (``window_s / 60`` by default, so at most 61 of them):
a bucket holds the summed cost of the requests admitted during its span and the time of the newest
of them, and it leaves the window exactly ``window_s`` after that newest admission. So memory is
bounded per counter, a request never leaves the window early (no over-admission, ever), and it
leaves at most ``bucket_s`` late (a bucket's older requests wait for its newest one).

**Retry-After.** When a check does not fit, ``retry_after_s`` is the time until enough of the window
expires for the request to fit, assuming nothing else is admitted meanwhile (at least
:data:`MIN_RETRY_AFTER_S`). A check whose cost exceeds its limit can never fit; it is rejected with
``retry_after_s = window_s`` (callers should reject such a request as invalid up front).

**TPM settlement.** Admission reserves the request's prompt estimate plus ``max_tokens``;
:meth:`RateLimiter.adjust` then gives back the unused part (or adds the excess) in the *same*
bucket the reservation went into, so the window stays true to when the tokens were admitted. The
bound this gives (C5): tokens admitted in any window ≤ limit (+ whatever requests overran their
reservation).

Backends: :class:`MemoryRateLimiter` (one process) and :class:`RedisRateLimiter` (several gateway
processes sharing one Redis; it uses the Redis server's clock, so processes with skewed clocks
agree; it sends concurrent requests, and settlements, together: one round trip per batch). A Redis
failure raises :class:`RateLimitBackendError`; whether to fail open or closed is the caller's choice.
"""

from __future__ import annotations

import abc
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from modelyard.errors import NotReadyError
from modelyard.policy._group_commit import GroupCommit
from modelyard.policy._ratelimit_lua import BATCH_LUA

__all__ = [
    "DEFAULT_WINDOW_S",
    "MIN_RETRY_AFTER_S",
    "Decision",
    "LimitCheck",
    "LimitKind",
    "MemoryRateLimiter",
    "RateLimitBackendError",
    "RateLimiter",
    "RedisRateLimiter",
]

LimitKind = Literal["rpm", "tpm"]
DEFAULT_WINDOW_S = 60.0
"""The window of an RPM or TPM limit: one minute."""
MIN_RETRY_AFTER_S = 0.01
"""The smallest ``retry_after_s`` a rejection carries."""
MAX_LEASE_HOLD_S = 1.0
"""The longest a :meth:`RedisRateLimiter.lease` may be held (the counters' expiry allows for it)."""
BUCKETS_PER_WINDOW = 60
"""The default sub-bucket count: ``bucket_s = window_s / 60`` (1 s for a one-minute window)."""


class RateLimitBackendError(NotReadyError):
    """The shared rate-limit store (Redis) could not be reached or failed.

    A 503 if nobody catches it; the gateway decides whether to fail open (admit without a limit)
    or closed (reject) and logs it either way.
    """


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One counter a request must fit into.

    ``scope`` names what is limited (``"key"``, ``"team"``, ``"model"``, ...) and ``scope_id`` which
    one. ``kind`` is ``"rpm"`` (``cost`` 1) or ``"tpm"`` (``cost`` = the tokens reserved: the prompt
    estimate plus ``max_tokens``). ``limit`` is per window; it is read on every call, so a changed
    limit applies at once. Each check of one request must name a different counter.
    """

    scope: str
    scope_id: str
    kind: LimitKind
    limit: int
    cost: int

    def __post_init__(self) -> None:
        if self.limit < 0 or self.cost < 0:
            raise ValueError(f"limit and cost must be >= 0, got limit={self.limit} cost={self.cost}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`RateLimiter.acquire`.

    ``allowed``: every counter was incremented (else none was). ``retry_after_s``: when rejected, the
    seconds until the request would fit (for the ``Retry-After`` header); 0 when allowed.
    ``violated``: the check that does not fit (of several, the one with the longest wait).
    ``at``: the time on the limiter's clock the decision was made; pass it to
    :meth:`RateLimiter.adjust` to settle a TPM reservation.
    """

    allowed: bool
    retry_after_s: float
    violated: LimitCheck | None
    at: float = 0.0


class RateLimiter(abc.ABC):
    """Sliding-window limits: ``acquire`` admits a request against all its counters or none.

    Implementations: :class:`MemoryRateLimiter`, :class:`RedisRateLimiter`. Use as an async context
    manager or call :meth:`aclose`.
    """

    window_s: float

    @abc.abstractmethod
    async def acquire(self, checks: Sequence[LimitCheck], now: float | None = None) -> Decision:
        """Admit the request if every check fits, incrementing every counter; else change nothing.

        ``now`` (seconds on the limiter's clock) is for tests; ``None`` reads the backend's clock.
        """

    @abc.abstractmethod
    async def adjust(self, check: LimitCheck, delta: int, at: float) -> None:
        """Add ``delta`` (negative: give back) to ``check``'s counter in the bucket of time ``at``.

        ``at`` is the :attr:`Decision.at` of the acquire that reserved the cost. If that part of the
        window has already expired, nothing happens. A counter never goes below zero. A backend may
        write it later (Redis batches settlements: see :class:`RedisRateLimiter`); every later
        ``acquire`` of this limiter sees it.
        """

    async def flush(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Write the settlements a backend still holds; raises :class:`RateLimitBackendError`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release the backend's resources."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _bucket_span(window_s: float, bucket_s: float | None) -> float:
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    span = window_s / BUCKETS_PER_WINDOW if bucket_s is None else bucket_s
    if not 0 < span <= window_s:
        raise ValueError(f"bucket_s must be in (0, window_s], got {bucket_s} (window_s={window_s})")
    return span


# --------------------------------------------------------------------------------------------------
# In memory


class _Bucket:
    __slots__ = ("amount", "index", "newest")

    def __init__(self, index: int, amount: int, newest: float) -> None:
        self.index = index
        self.amount = amount
        self.newest = newest


class _Counter:
    """One counter's window: buckets oldest first, their running total, and when it was last used."""

    __slots__ = ("buckets", "total", "touched")

    def __init__(self, now: float) -> None:
        self.buckets: deque[_Bucket] = deque()
        self.total = 0
        self.touched = now

    def expire(self, cut: float) -> None:
        """Drop the buckets whose newest admission is at or before ``cut`` (= now - window)."""
        buckets = self.buckets
        while buckets and buckets[0].newest <= cut:
            self.total -= buckets.popleft().amount

    def wait_s(self, need: int, now: float, window_s: float) -> float:
        """Seconds until ``need`` of the total has expired."""
        freed = 0
        for bucket in self.buckets:
            freed += bucket.amount
            if freed >= need:
                return bucket.newest + window_s - now
        return window_s  # unreachable while total is consistent: need <= total

    def add(self, index: int, amount: int, now: float) -> None:
        buckets = self.buckets
        last = buckets[-1] if buckets else None
        if last is not None and index <= last.index:
            # Same bucket (or a clock that stepped back: joining the newest bucket is conservative).
            last.amount += amount
            if now > last.newest:
                last.newest = now
        else:
            buckets.append(_Bucket(index, amount, now))
        self.total += amount


class MemoryRateLimiter(RateLimiter):
    """Limits held in this process: for one gateway process, and for tests.

    ``window_s`` (default 60): the sliding window. ``bucket_s`` (default ``window_s / 60``): the
    sub-bucket span; a request leaves the window at most this late. The clock is
    :func:`time.monotonic` (so :attr:`Decision.at` is too). Counters are kept in least-recently-used
    order and each call drops a few that have been idle for a whole window, so memory follows the
    counters in use, without a periodic sweep that would stall one request. Not thread-safe: use it
    from one event loop.
    """

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S, bucket_s: float | None = None) -> None:
        self.window_s = float(window_s)
        self.bucket_s = _bucket_span(self.window_s, bucket_s)
        # An OrderedDict, not a dict: move_to_end and peeking at the front stay O(1) under churn.
        self._counters: OrderedDict[tuple[str, str, str], _Counter] = OrderedDict()

    def __len__(self) -> int:
        """The number of counters held (for tests and metrics)."""
        return len(self._counters)

    async def acquire(self, checks: Sequence[LimitCheck], now: float | None = None) -> Decision:
        # No await between check and increment: the event loop makes this atomic.
        return self.acquire_nowait(checks, time.monotonic() if now is None else now)

    def acquire_nowait(self, checks: Sequence[LimitCheck], now: float) -> Decision:
        """:meth:`acquire` without the coroutine, for synchronous callers and benchmarks."""
        window_s = self.window_s
        cut = now - window_s
        counters = self._counters
        if counters:
            self._retire_idle(cut)
        violated: LimitCheck | None = None
        worst_wait = 0.0
        held: list[_Counter] = []
        for check in checks:
            key = (check.scope, check.scope_id, check.kind)
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = _Counter(now)
            else:
                counters.move_to_end(key)
                if now > counter.touched:
                    counter.touched = now
                if counter.buckets and counter.buckets[0].newest <= cut:
                    counter.expire(cut)
            if counter.total + check.cost > check.limit:
                if check.cost > check.limit:
                    wait = window_s
                else:
                    wait = counter.wait_s(counter.total + check.cost - check.limit, now, window_s)
                if violated is None or wait > worst_wait:
                    violated, worst_wait = check, wait
            held.append(counter)
        if violated is not None:
            return Decision(False, max(worst_wait, MIN_RETRY_AFTER_S), violated, now)
        index = int(now // self.bucket_s)
        for counter, check in zip(held, checks, strict=True):
            counter.add(index, check.cost, now)
        return Decision(True, 0.0, None, now)

    async def adjust(self, check: LimitCheck, delta: int, at: float) -> None:
        counter = self._counters.get((check.scope, check.scope_id, check.kind))
        if counter is None or delta == 0:
            return
        index = int(at // self.bucket_s)
        for bucket in reversed(counter.buckets):  # settlements are recent: found near the end
            if bucket.index == index:
                amount = max(bucket.amount + delta, 0)
                counter.total += amount - bucket.amount
                bucket.amount = amount
                return
            if bucket.index < index:
                return

    def _retire_idle(self, cut: float, most: int = 8) -> None:
        """Drop up to ``most`` counters unused since ``cut``: all their buckets have expired. The
        least recently used is at the front, so the first one still in use ends the search."""
        counters = self._counters
        for _ in range(most):
            key = next(iter(counters))
            if counters[key].touched > cut:
                return
            del counters[key]
            if not counters:
                return


# --------------------------------------------------------------------------------------------------
# In Redis


def _escape(part: str) -> str:
    # Keep keys unambiguous: a ':' inside a scope must not look like the separator.
    return part.replace("%", "%25").replace(":", "%3A")


def _safe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_Request = tuple[Sequence[LimitCheck], int | None, Sequence[int] | None, int]
"""One acquire as the batch script takes it: its checks, ``now_us`` (``None``: the server's clock),
and for a lease what each check wants and how long (µs) it is held (see :meth:`RedisRateLimiter.lease`)."""
_DeltaKey = tuple[str, int]
"""A settlement's target: the counter's key base and the bucket index."""


class RedisRateLimiter(RateLimiter):
    """Limits shared by every gateway process through one Redis (6.2 or newer).

    ``url``: e.g. ``redis://127.0.0.1:6379/0`` (``rediss://`` for TLS; a password in the URL is
    never logged). ``prefix`` (default ``"modelyard:rl"``): the start of every key; give each
    deployment its own. On Redis Cluster, use a hash-tagged prefix such as ``"{modelyard:rl}"`` so
    all counters share a slot (one call carries many requests' counters). ``window_s`` /
    ``bucket_s``: as for :class:`MemoryRateLimiter`. ``timeout_s`` (default 0.5): the connect,
    command and wait-for-a-free-connection timeout. ``max_connections`` (default 32): the
    connection pool's size. ``max_batch`` (default 128): the most requests one call carries.
    ``settle_delay_s`` (default 0.02): how long a TPM settlement may wait to ride along with a call.

    **Group commit.** One call is in flight at a time; the ``acquire``\\ s that arrive meanwhile go
    together in the next one: one EVALSHA of a Lua script that evaluates the batch in order, each
    request checked and incremented atomically as before, and reads the time from the Redis server
    (so gateway processes with skewed clocks agree). A lone request is sent at once, from its own
    task (no added wait); N concurrent requests cost one round trip per batch. Each counter is a hash
    (bucket → amount, plus the total ``n``) and a sorted set (bucket → its newest admission, µs),
    both expiring one window after the counter's last admission.

    **Settlements** (:meth:`adjust`) return at once: the delta is summed in memory per counter and
    bucket and written with the next call, ahead of that call's requests. So an ``acquire`` always
    sees every settlement made in this process before it; another process sees it at most
    ``settle_delay_s`` + two round trips later (a timer sends pending deltas when no request comes to
    carry them). Until then, tokens given back elsewhere still count, which can only refuse, for
    that long, a request that would just fit; an overrun (a positive delta) counts that much late.
    :meth:`flush` writes them now; :meth:`aclose` does too, so a clean shutdown loses none.

    **Failures** raise :class:`RateLimitBackendError` in every request of the failed call. Each call
    ends within about ``timeout_s`` (twice that if a dropped connection is retried), and a request
    waits only for the call in flight and its own (more if over ``max_batch`` requests queue ahead of
    it), so none hangs. Settlements in a failed call are dropped with a warning: the call may have
    reached Redis, and counting them twice would be worse; the counters keep the reservation until
    their window passes.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "modelyard:rl",
        *,
        window_s: float = DEFAULT_WINDOW_S,
        bucket_s: float | None = None,
        timeout_s: float = 0.5,
        max_connections: int = 32,
        max_batch: int = 128,
        settle_delay_s: float = 0.02,
    ) -> None:
        self.window_s = float(window_s)
        self.bucket_s = _bucket_span(self.window_s, bucket_s)
        self.prefix = prefix
        self._window_us = round(self.window_s * 1_000_000)
        self._bucket_us = max(round(self.bucket_s * 1_000_000), 1)
        # A counter outlives its newest bucket (≤ now + a lease's hold) by a window, with a second spare.
        self._ttl_ms = math.ceil(self._window_us / 1000) + 1000 + math.ceil(MAX_LEASE_HOLD_S * 1000)
        self._where = _safe_url(url)
        # One retry, on a connection error only: it replaces a pooled connection the server closed.
        # Never retry a timeout: the script may have run, and running it twice counts a request twice.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis: Redis = Redis.from_pool(pool)  # closes the pool on aclose()
        self._batch_sha = hashlib.sha1(BATCH_LUA.encode()).hexdigest()
        self._batches: GroupCommit[_Request, tuple[Decision, tuple[int, ...]], _DeltaKey] = GroupCommit(
            self._send, max_batch=max_batch, delta_delay_s=settle_delay_s
        )

    @property
    def calls(self) -> int:
        """Redis script calls made so far (for tests and metrics)."""
        return self._batches.calls

    def _base(self, check: LimitCheck) -> str:
        return f"{self.prefix}:{check.kind}:{_escape(check.scope)}:{check.scope_id}"

    async def acquire(self, checks: Sequence[LimitCheck], now: float | None = None) -> Decision:
        if not checks:
            return Decision(True, 0.0, None, time.time() if now is None else now)
        decision, _ = await self._batches.submit(
            (checks, None if now is None else round(now * 1_000_000), None, 0)
        )
        return decision

    async def lease(
        self, checks: Sequence[LimitCheck], wants: Sequence[int], hold_s: float
    ) -> tuple[Decision, tuple[int, ...]]:
        """Admit like :meth:`acquire`, taking up to ``wants[i]`` (≥ ``checks[i].cost``) of each counter.

        All or nothing on the checks' costs, as :meth:`acquire`; each counter then gives what it has
        left up to its want. Returns the decision and what each check was granted (zeros when
        refused). The grant counts as admitted ``hold_s`` (at most :data:`MAX_LEASE_HOLD_S`) after
        the decision, so whatever the caller admits from it within ``hold_s`` never leaves the
        window early. Give back the unused rest with :meth:`adjust` at :attr:`Decision.at`.
        """
        if not 0 <= hold_s <= MAX_LEASE_HOLD_S:
            raise ValueError(f"hold_s must be in [0, {MAX_LEASE_HOLD_S}], got {hold_s}")
        if len(wants) != len(checks):
            raise ValueError("one want per check")
        return await self._batches.submit((checks, None, wants, round(hold_s * 1_000_000)))

    async def adjust(self, check: LimitCheck, delta: int, at: float) -> None:
        """Queue the settlement (see the class docstring); it never waits for Redis nor raises."""
        self.adjust_nowait(check, delta, at)

    def adjust_nowait(self, check: LimitCheck, delta: int, at: float) -> None:
        """:meth:`adjust` without the coroutine."""
        if delta:
            bucket = round(at * 1_000_000) // self._bucket_us
            self._batches.add((self._base(check), bucket), delta)

    async def flush(self) -> None:
        await self._batches.flush()

    async def _send(
        self, requests: Sequence[_Request], deltas: dict[_DeltaKey, int]
    ) -> list[tuple[Decision, tuple[int, ...]]]:
        """One EVALSHA of the batch script: ``deltas`` first, then ``requests`` in order."""
        counters: dict[str, int] = {}  # key base → its 1-based index in KEYS (pairs)
        keys: list[str] = []

        def counter(base: str) -> int:
            index = counters.get(base)
            if index is None:
                index = counters[base] = len(counters) + 1
                keys.append(base + ":h")
                keys.append(base + ":z")
            return index

        batch = orjson.dumps(
            [
                self._window_us,
                self._bucket_us,
                self._ttl_ms,
                [[counter(base), bucket, delta] for (base, bucket), delta in deltas.items()],
                [
                    [now_us, [[counter(self._base(c)), c.limit, c.cost] for c in checks]]
                    if wants is None
                    else [
                        now_us,
                        [
                            [counter(self._base(c)), c.limit, c.cost, want]
                            for c, want in zip(checks, wants, strict=True)
                        ],
                        hold_us,
                    ]
                    for checks, now_us, wants, hold_us in requests
                ],
            ]
        )
        with self._backend_errors():
            try:
                reply = await self._redis.evalsha(self._batch_sha, len(keys), *keys, batch)
            except NoScriptError:
                # First use, or the server restarted / ran SCRIPT FLUSH: load it, then run it.
                await self._redis.script_load(BATCH_LUA)
                reply = await self._redis.evalsha(self._batch_sha, len(keys), *keys, batch)
        decisions: list[tuple[Decision, tuple[int, ...]]] = []
        i = 0
        for checks, _, wants, _ in requests:
            allowed, now_us, violated, wait_us = reply[i : i + 4]
            i += 4
            grants: tuple[int, ...] = ()
            if wants is not None:
                grants = tuple(int(g) for g in reply[i : i + len(checks)])
                i += len(checks)
            at = int(now_us) / 1_000_000
            if allowed:
                decisions.append((Decision(True, 0.0, None, at), grants))
            else:
                wait_s = max(int(wait_us) / 1_000_000, MIN_RETRY_AFTER_S)
                decisions.append((Decision(False, wait_s, checks[int(violated) - 1], at), grants))
        return decisions

    @contextmanager
    def _backend_errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise RateLimitBackendError(
                f"rate-limit store {self._where} failed ({type(exc).__name__}: {exc}); check that "
                "Redis is running and reachable, or point the rate limiter at another URL"
            ) from exc

    async def ping(self) -> None:
        """Check the connection (for readiness probes); raises :class:`RateLimitBackendError`."""
        with self._backend_errors():
            await self._redis.ping()

    async def aclose(self) -> None:
        """Write the pending settlements (a failure is logged), then close the connections."""
        try:
            await self._batches.aclose()
        finally:
            await self._redis.aclose()
