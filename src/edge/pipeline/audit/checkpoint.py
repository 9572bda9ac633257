"""Signed checkpoints: an Ed25519 signature over the chain so far.

A checkpoint is a record in the chain like any other (`kind: checkpoint`);
its `sig` covers its own canonical JSON without `sig`, which holds `prev`,
the hash of the record before it, so one signature vouches for every record
up to that point. Rewriting history means recomputing every later hash, and
the next checkpoint's signature then no longer matches without the key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.config.audit import load_signing_key
from edge.pipeline.audit.chain import canonical

CHECKPOINT = "checkpoint"


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a key, so a verifier can say which key a checkpoint wants."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_signing_key(path))

    def sign(self, text: str) -> str:
        return base64.b64encode(self._key.sign(text.encode())).decode()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key; ValueError otherwise."""
    data = path.read_bytes()
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError(f"expected a PEM Ed25519 public key in {path}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 key in {path} (got {type(key).__name__.lstrip('_')})")
    return key


def signature_valid(record: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    unsigned = {k: v for k, v in record.items() if k != "sig"}
    try:
        public_key.verify(base64.b64decode(str(record.get("sig", ""))), canonical(unsigned).encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def write_key_pair(private_path: Path, public_path: Path) -> None:
    """A new signing key (readable by the owner only) and its public half for verifiers."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private)
    public_path.write_bytes(public)
