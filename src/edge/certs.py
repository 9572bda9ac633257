"""Dev credentials for a laptop and the demo: a CA, server and client certificates, a signing key, tokens.

`edge certs` writes a development CA, a server certificate for the listeners,
client certificates in the CAC/PIV style (subject `O=DoD, OU=CAC`, an email
SAN) and an ES256 signing key with its public JWKS; `edge token` mints a JWT
with that key. Nothing here is for production: keys are written unencrypted
(mode 0600) and the CA lives next to what it signs. Tests use the same
functions to make their certificates in the test session.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_ISSUER = "https://edge.dev.local"
DEV_AUDIENCE = "edge"
DEV_KID = "edge-dev-1"
_NAME_OIDS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
              "C": NameOID.COUNTRY_NAME}  # fmt: skip


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)


def _name(attributes: Sequence[tuple[str, str]]) -> x509.Name:
    return x509.Name([x509.NameAttribute(_NAME_OIDS[kind], value) for kind, value in attributes])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str = "edge dev CA", days: int = 365) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name([("CN", name), ("O", "edge dev")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(
    ca: Issued,
    subject: Sequence[tuple[str, str]],
    *,
    hosts: Iterable[str] = (),
    emails: Iterable[str] = (),
    uris: Iterable[str] = (),
    client: bool = False,
    server: bool | None = None,
    days: int = 90,
) -> Issued:
    """A leaf signed by `ca`: a server certificate for `hosts`, a client one (`client=True`), or both."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.RFC822Name(e) for e in emails] + [x509.UniformResourceIdentifier(u) for u in uris]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if (not client if server is None else server) else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def public_jwks(key: ec.EllipticCurvePrivateKey, kid: str = DEV_KID) -> dict[str, Any]:
    """The JWKS that verifies tokens signed by `key`."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "ES256"}]}


def mint_token(
    key: ec.EllipticCurvePrivateKey,
    subject: str,
    roles: Sequence[str] = (),
    *,
    kid: str = DEV_KID,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    ttl: float = 3600,
    claims: Mapping[str, Any] | None = None,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
        "roles": list(roles),
        **(claims or {}),
    }
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def write_dev_set(
    directory: Path, hosts: Sequence[str], clients: Sequence[str], organization: str, units: Sequence[str]
) -> list[Path]:
    """Everything `edge certs` writes; returns the files, CA first."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = make_ca()
    written = [directory / "ca.crt", directory / "ca.key"]
    ca.write(*written)
    server = issue(ca, [("CN", hosts[0] if hosts else "localhost")], hosts=hosts)
    server.write(directory / "server.crt", directory / "server.key")
    written += [directory / "server.crt", directory / "server.key"]
    for name in clients:
        subject = [("CN", name), ("O", organization), *(("OU", unit) for unit in units)]
        email = name if "@" in name else f"{name}@edge.dev.local"
        client = issue(ca, subject, emails=[email], client=True)
        stem = name.split("@")[0]
        client.write(directory / f"client-{stem}.crt", directory / f"client-{stem}.key")
        written += [directory / f"client-{stem}.crt", directory / f"client-{stem}.key"]
    signing = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "signing.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(Issued(ca.certificate, signing).key_pem)
    (directory / "jwks.json").write_text(json.dumps(public_jwks(signing), indent=2) + "\n")
    return [*written, key_path, directory / "jwks.json"]


def identity_snippet(directory: Path) -> str:
    """The edge.yaml lines that trust what `write_dev_set` made."""
    return f"""listeners:
  http:
    tls: {{cert: {directory}/server.crt, key: {directory}/server.key, client_ca: {directory}/ca.crt}}
identity:
  providers:
    dev:
      type: jwt
      issuer: {DEV_ISSUER}
      audience: {DEV_AUDIENCE}
      algorithms: [ES256]
      keys: {{jwks_file: {directory}/jwks.json}}
    cac:
      type: client-cert
      subject: [san:email, dn:CN]
      roles:
        - {{match: "O=DoD, OU=CAC", roles: [Veteran]}}
"""
