"""The `redis` sink: XADD to one stream that collects the records of many gateway instances.

Each entry holds `instance`, `seq` and `record` (the canonical JSON line).
Delivery is exactly once even when a call times out after Redis did the work
and the batch is sent again: a Lua script keeps, per instance, the highest
sequence number it added (and that record's hash, where a restarted gateway
resumes its chain) and skips entries at or below it, atomically with the
XADDs. The stream is trimmed with `MAXLEN` (`~` by default). This runs in
the audit writer (the sealing process, or a thread), so it uses redis-py's
blocking client with short timeouts and no retries of its own: the spool is
the retry.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edge.config.audit import RedisSink as RedisSinkConfig
from edge.pipeline.audit.chain import Entry, Head, line_hash
from edge.pipeline.audit.sinks import SinkDown

_ADD = """
local head = tonumber(redis.call('HGET', KEYS[2], 'seq')) or 0
local last, hash = head, false
for i = 4, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], ARGV[1], '*',
      'instance', ARGV[3], 'seq', ARGV[i], 'record', ARGV[i + 2])
    last, hash = seq, ARGV[i + 1]
  end
end
if hash then
  redis.call('HSET', KEYS[2], 'seq', last, 'hash', hash)
end
return last
"""


class RedisSink:
    durable = True

    def __init__(self, config: RedisSinkConfig, instance: str, name: str = "redis") -> None:
        self.name = name
        self.config = config
        self.instance = instance
        self.stream = config.stream
        self.head_key = f"{config.stream}:head:{instance}"
        self._client = redis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._add = self._client.register_script(_ADD)
        self._trim = "~" if config.approximate else "="

    def open(self) -> Head | None:
        """The chain head this instance left in Redis; None when there is none or Redis is down now."""
        try:
            head = self._client.hgetall(self.head_key)
        except redis.RedisError:
            return None
        if not head:
            return None
        return Head(int(head[b"seq"]), _text(head[b"hash"]))

    def write(self, entries: Sequence[Entry]) -> None:
        size = self.config.batch
        for start in range(0, len(entries), size):
            args: list[str | int] = [self.config.maxlen, self._trim, self.instance]
            for entry in entries[start : start + size]:
                args += [entry.seq, line_hash(entry.line), entry.line]
            try:
                self._add(keys=[self.stream, self.head_key], args=args)
            except redis.RedisError as error:
                raise SinkDown(f"redis {self.stream}: {error}") from None

    def tick(self, now: float) -> None:
        return None

    def close(self) -> None:
        self._client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
