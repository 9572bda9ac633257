"""The audit trail: one tamper-evident record per call, written off the event loop.

record.py      the record of one call, built on the hot path
auditlog.py    AuditLog: the bounded queue and the writer task (event loop side)
writer.py      ChainWriter: seals, signs, delivers (one batch at a time)
sealer.py      SealerProcess: the ChainWriter in a forked child, off the gateway's GIL
chain.py       canonical JSON, SHA-256 links, sequence numbers
checkpoint.py  Ed25519-signed checkpoints
delivery.py    one sink's path: direct while up, spooled while down
spool.py       the durable local spool
tally.py       calls by route and status, counted per batch, for metrics
sinks/         file, stdout, redis
verify.py      `edge audit verify`: recompute the chain, check signatures and gaps
"""

from edge.pipeline.audit.auditlog import AuditLog
from edge.pipeline.audit.record import build_record
from edge.pipeline.audit.sinks import Sink, SinkDown
from edge.pipeline.audit.sinks.file import FileSink
from edge.pipeline.audit.sinks.redis import RedisSink
from edge.pipeline.audit.sinks.stdout import StdoutSink

__all__ = ["AuditLog", "FileSink", "RedisSink", "Sink", "SinkDown", "StdoutSink", "build_record"]
