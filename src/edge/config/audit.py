"""The `audit:` section of `edge.yaml`: sinks, spool, checkpoints and the signing key.

Every call is written to each sink (`file`, `stdout`, `redis`). A sink that is
down (disk full, Redis gone) gets its records in a durable local spool until
it is back; `spool.on_full` says what happens when that spool reaches its
bound. Checkpoints are signed with the Ed25519 key in `signing_key`; without
one the records are still hash-chained, but nothing is signed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, field_validator

from edge.config.base import ByteSize, Duration, Frozen

FsyncMode = Literal["always", "interval", "never"]


class FileSink(Frozen):
    type: Literal["file"]
    name: str | None = None
    path: Path
    max_size: ByteSize = Field(default=100 * 2**20, description="rotate above this size; 0 turns it off")
    max_age: Duration = Field(default=86400.0, description="rotate a file this old; 0 turns it off")
    fsync: FsyncMode = "interval"
    fsync_interval: Duration = Field(default=1.0, gt=0)


class StdoutSink(Frozen):
    type: Literal["stdout"]
    name: str | None = None


class RedisSink(Frozen):
    type: Literal["redis"]
    name: str | None = None
    url: str = "redis://127.0.0.1:6379/0"
    stream: str = "edge:audit"
    maxlen: int = Field(default=1_000_000, ge=1, description="XADD MAXLEN: entries the stream keeps")
    approximate: bool = Field(default=True, description="MAXLEN ~ (cheaper trimming, may keep a few more)")
    timeout: Duration = Field(default=1.0, gt=0)
    batch: int = Field(default=500, ge=1, description="records per round trip")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a URL such as redis://host:6379/0 (got {url!r})")
        return url


Sink = Annotated[FileSink | StdoutSink | RedisSink, Field(discriminator="type")]


class Spool(Frozen):
    path: Path = Field(default=Path("audit-spool"), description="a folder on a local disk, one subfolder per sink")
    max_bytes: ByteSize = Field(default=2**30, ge=1)
    on_full: Literal["reject", "drop_oldest"] = "reject"
    retry: Duration = Field(default=1.0, gt=0, description="how often a down sink is tried again")


class Checkpoints(Frozen):
    every: int = Field(default=1000, ge=1, description="records between signed checkpoints")
    interval: Duration = Field(default=60.0, gt=0, description="a checkpoint at least this often, idle or not")


class Audit(Frozen):
    sinks: tuple[Sink, ...] = ()
    queue_size: int = Field(default=65536, ge=1)
    signing_key: Path | None = Field(default=None, description="Ed25519 private key (PEM) that signs checkpoints")
    checkpoints: Checkpoints = Checkpoints()
    spool: Spool = Spool()

    @field_validator("sinks")
    @classmethod
    def _unique_names(
        cls, sinks: tuple[FileSink | StdoutSink | RedisSink, ...]
    ) -> tuple[FileSink | StdoutSink | RedisSink, ...]:
        names = sink_names(sinks)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expected distinct sink names; set `name:` on all but one (two are {duplicates[0]!r})")
        return sinks


def sink_names(sinks: tuple[FileSink | StdoutSink | RedisSink, ...]) -> list[str]:
    """A sink's name is its spool folder: `name:` when given, else its type."""
    return [sink.name or sink.type for sink in sinks]


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key; ValueError saying what is wrong with the file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"expected an unencrypted PEM private key in {path}") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.lstrip("_").removesuffix("PrivateKey")
        raise ValueError(f"expected an Ed25519 private key in {path} (got an {kind} key)")
    return key


def check_audit(audit: Audit, config_path: Path) -> list[str]:
    """Problems only visible once paths are resolved: the signing key must load."""
    if audit.signing_key is None:
        return []
    try:
        load_signing_key(audit.signing_key)
    except ValueError as error:
        return [f"{config_path}: audit.signing_key: {error}"]
    return []
