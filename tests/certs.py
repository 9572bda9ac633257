"""Test certificates made on the fly, written to files: a thin layer over `edge.certs`.

Behaviour tests that need TLS (gRPC listener and backends, mTLS, identity from
client certificates) generate their own keys in the test session with
`edge.certs` (cryptography underneath), so no key material is ever committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge import certs


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes and as files on disk."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path
    der: bytes


@dataclass(frozen=True)
class CA:
    name: str
    issued: certs.Issued
    cert_path: Path

    @property
    def certificate(self) -> x509.Certificate:
        return self.issued.certificate

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self.issued.key

    @property
    def cert_pem(self) -> bytes:
        return self.issued.cert_pem


def make_ca(directory: Path, name: str = "edge test CA") -> CA:
    """A self-signed CA; its certificate is written to `directory/<name>.pem`."""
    issued = certs.make_ca(name, days=1)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(issued.cert_pem)
    return CA(name, issued, path)


def issue_cert(
    ca: CA,
    directory: Path,
    common_name: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    client: bool = False,
    server: bool = True,
) -> Issued:
    """A leaf certificate signed by `ca`, for a server (SANs), a client, or both."""
    issued = certs.issue(ca.issued, [("CN", common_name)], hosts=(*dns, *ips), client=client, server=server, days=1)
    stem = directory / common_name.replace(" ", "-")
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(issued.cert_pem)
    key_path.write_bytes(issued.key_pem)
    return Issued(issued.cert_pem, issued.key_pem, cert_path, key_path, issued.der)
