"""The shared quota store: Redis, one atomic Lua script per decision, on the Redis server's clock.

Many workers and many gateway instances count in the same keys, so counts
are exact across all of them. The script (`DECIDE`) checks every rule of a
call and commits them only if none that enforces denied, exactly like
`MemoryStore.decide`; it reads the time with `TIME`, so gateway clocks never
matter. Every key carries the hash tag `{<key_prefix>}`, so all keys of one
call (and of the whole gateway) live in one Redis Cluster slot and the
script never touches two slots.

Decisions made in the same event-loop turn go out together as one run of
the script (up to `MAX_BATCH` calls a run), each call still decided on its
own and in order: one command to pack and one reply to parse per batch, not
per call. A pipeline of one EVALSHA per call cost the gateway ~110-150 us of
CPU per call (two quota phases) in redis-py's per-command path, more than
the rest of the full pipeline; Redis itself spends less per call too. Each decision waits at most `timeout` (50 ms by default), and a
`Breaker` stops trying a Redis that keeps failing (the send task times
out, tells the breaker, then fails its callers; a caller's own timer is only
a backstop); both raise
`StoreUnavailable`, which the limiter turns into each rule's fallback.
redis-py's own retries are limited to one immediate reconnect on a broken
pooled connection, so a dead Redis never costs more than the timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from edge.config.quota import RedisOptions
from edge.deadlines import Deadlines
from edge.pipeline.quota.breaker import Breaker
from edge.pipeline.quota.gcra import Gcra
from edge.pipeline.quota.rules import Check, Rule
from edge.pipeline.quota.verdict import StoreUnavailable, Verdict

log = logging.getLogger("edge.quota.redis")

# One run decides every call of a batch, in order, each as its own all-or-nothing decision.
# KEYS: one per check, the calls' checks one after the other. ARGV[1]: the number of calls; then per
# call a member name unique to it, its number of checks, and 4 per check: algorithm ('g' GCRA:
# interval, window in microseconds | 's' sliding log: period in microseconds, limit) and '1' when the
# rule enforces ('0' for shadow rules). Returns per call [passed, then allowed, remaining, reset ms,
# retry ms per check]; a call's checks are committed only when it passed.
DECIDE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {}
local key, at = 0, 2
for call = 1, tonumber(ARGV[1]) do
  local member, count = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  local passed = #out + 1
  out[passed] = 1
  local commits = {}
  for c = 1, count do
    local k, arg = KEYS[key + c], at + (c - 1) * 4
    local kind, a, b = ARGV[arg], tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
    local allowed, remaining, reset, retry = 1, 0, 0, 0
    if kind == 'g' then
      local stored = redis.call('GET', k)
      local tat = stored and tonumber(stored) or now
      if tat < now then tat = now end
      local new_tat = tat + a
      local allow_at = new_tat - b
      if allow_at - now > 1 then
        allowed, reset, retry = 0, tat - now, allow_at - now
      else
        remaining = math.floor((b - (new_tat - now)) / a + 1e-9)
        reset = new_tat - now
        commits[c] = new_tat
      end
    else
      redis.call('ZREMRANGEBYSCORE', k, '-inf', string.format('%.3f', now - a))
      local size = redis.call('ZCARD', k)
      if size < b then
        remaining, reset = b - size - 1, a
        commits[c] = now
      else
        local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
        local newest = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
        allowed, reset, retry = 0, tonumber(newest[2]) + a - now, tonumber(oldest[2]) + a - now
      end
    end
    if allowed == 0 and ARGV[arg + 3] == '1' then out[passed] = 0 end
    out[#out + 1] = allowed
    out[#out + 1] = remaining
    out[#out + 1] = math.ceil(reset / 1000)
    out[#out + 1] = math.ceil(retry / 1000)
  end
  if out[passed] == 1 then
    for c = 1, count do
      local value = commits[c]
      if value then
        local k, arg = KEYS[key + c], at + (c - 1) * 4
        if ARGV[arg] == 'g' then
          local ttl = math.max(1, math.ceil((value - now) / 1000))
          redis.call('SET', k, string.format('%.3f', value), 'PX', ttl)
        else
          redis.call('ZADD', k, string.format('%.0f', now), member)
          redis.call('PEXPIRE', k, math.ceil(tonumber(ARGV[arg + 1]) / 1000))
        end
      end
    end
  end
  key = key + count
  at = at + count * 4
end
return out
"""
MAX_BATCH = 256  # calls per script run: a run blocks Redis, so a huge burst goes as several runs

Pending = tuple[list[str], list[str], "asyncio.Future[list[int]]"]


class RedisStore:
    def __init__(self, url: str, options: RedisOptions, breaker: Breaker | None = None) -> None:
        self.url = url
        self.timeout = options.timeout
        self.pool_size = options.pool_size
        self.breaker = breaker or Breaker(options.breaker.failures, options.breaker.open_for)
        self.prefix = "{" + options.key_prefix + "}:"
        extra: dict[str, Any] = {"ssl_ca_certs": str(options.ca)} if options.ca is not None else {}
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=options.pool_size,
            timeout=options.timeout,
            socket_timeout=options.timeout,
            socket_connect_timeout=options.timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **extra,
        )
        self.client = Redis.from_pool(pool)
        self.script = self.client.register_script(DECIDE)
        self._members = itertools.count()
        self._instance = os.urandom(6).hex()
        self._args: dict[str, tuple[str, str, str, str]] = {}
        self._pending: list[Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._deadlines = Deadlines()  # a safety net per call; `_Deadline` fails a batch on time

    def key(self, rule: Rule, key: str) -> str:
        return f"{self.prefix}{rule.store_name}:{key}"

    async def start(self) -> None:
        """Load the script and open the pool ahead of the first burst; a Redis that is down now is not fatal."""
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.client.script_load(DECIDE)
                await asyncio.gather(*(self.client.ping() for _ in range(self.pool_size)))
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("quota store %s not reachable at start (%s); rules fall back until it is", self.url, error)

    async def aclose(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=max(self.timeout * 4, 0.5))
        await self.client.aclose()

    async def decide(self, checks: Sequence[Check]) -> list[Verdict]:
        if not self.breaker.allow():
            raise StoreUnavailable("quota store breaker is open")
        keys = [self.prefix + rule.store_name + ":" + key for rule, key in checks]
        args = [f"{self._instance}.{next(self._members)}", str(len(checks))]
        for rule, _ in checks:
            args.extend(self._rule_args(rule))
        deadlines = self._deadlines
        loop = deadlines.loop or asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((keys, args, future))
        try:
            with deadlines.after(self.timeout * 2):
                reply = await future
        except TimeoutError:
            raise StoreUnavailable(f"quota store did not answer within {self.timeout * 1000:g} ms") from None
        return [
            (bool(reply[i]), reply[i + 1], reply[i + 2] / 1000, reply[i + 3] / 1000) for i in range(1, len(reply), 4)
        ]

    def _rule_args(self, rule: Rule) -> tuple[str, str, str, str]:
        args = self._args.get(rule.store_name)
        if args is None:
            algorithm = rule.algorithm
            enforce = "0" if rule.shadow else "1"
            if isinstance(algorithm, Gcra):
                args = ("g", f"{algorithm.interval * 1e6:.3f}", f"{algorithm.window * 1e6:.3f}", enforce)
            else:
                args = ("s", f"{algorithm.period * 1e6:.3f}", str(algorithm.limit), enforce)
            self._args[rule.store_name] = args
        return args

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch), name="quota-redis-send")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            async with asyncio.timeout(None) as timer:
                deadline = _Deadline(self, batch, timer)
                try:
                    replies = await self._execute(batch)
                finally:
                    deadline.cancel()
        except (RedisError, OSError, TimeoutError) as error:
            self._fail(batch, str(error) or f"no answer within {self.timeout * 1000:g} ms")
            return
        self.breaker.success()
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    def _fail(self, batch: list[Pending], reason: str) -> None:
        if all(future.done() for _, _, future in batch):
            return
        self.breaker.failure()
        failure = StoreUnavailable(f"quota store failed: {reason}")
        for _, _, future in batch:
            if not future.done():
                future.set_exception(failure)

    async def _execute(self, batch: list[Pending]) -> list[list[int]]:
        """Each call's reply, from one script run per `MAX_BATCH` calls (several runs go out at once)."""
        if len(batch) <= MAX_BATCH:
            return await self._run(batch)
        runs = await asyncio.gather(*(self._run(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)))
        return [reply for run in runs for reply in run]

    async def _run(self, calls: list[Pending]) -> list[list[int]]:
        keys: list[str] = []
        args: list[str] = [str(len(calls))]
        for call_keys, call_args, _ in calls:
            keys += call_keys
            args += call_args
        flat = await self.script(keys, args)
        replies = []
        at = 0
        for call_keys, _, _ in calls:
            end = at + 1 + 4 * len(call_keys)
            replies.append(flat[at:end])
            at = end
        return replies


class _Deadline:
    """Gives up on a batch `timeout` after it was sent: its callers fail over at once and the
    send is cancelled, however long redis-py then takes to drop the abandoned connection."""

    def __init__(self, store: RedisStore, batch: list[Pending], timer: asyncio.Timeout) -> None:
        self.store = store
        self.batch = batch
        self.timer = timer
        self.handle = asyncio.get_running_loop().call_later(store.timeout, self._expire)

    def _expire(self) -> None:
        self.store._fail(self.batch, f"no answer within {self.store.timeout * 1000:g} ms")
        self.timer.reschedule(asyncio.get_running_loop().time())

    def cancel(self) -> None:
        self.handle.cancel()
