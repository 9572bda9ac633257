"""Identity from a verified TLS client certificate (CAC/PIV style).

The listener verified the chain against its dedicated client CA bundle; a
front door hands the stage the leaf as DER in `Peer.certificate`. Here it
becomes a principal: the subject from the first configured source that the
certificate has (a URI, email or DNS SAN, the whole subject DN, or one DN
attribute), roles from rules over the subject DN (`O=DoD, OU=CAC` ->
`Veteran`). Parsing happens once per certificate: a connection sends the same
one with every request, so the result is kept by DER, bounded, until the
certificate's notAfter.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography import x509

from edge.call import Principal
from edge.config.identity import CertRule, ClientCertProvider
from edge.pipeline.identity.claims import ClaimError, header_value, roles_header
from edge.pipeline.identity.failures import AuthFailure
from edge.pipeline.identity.tokens import Verified

_KEPT = 1024
_SAN_TYPES: dict[str, type[x509.UniformResourceIdentifier] | type[x509.RFC822Name] | type[x509.DNSName]] = {
    "san:uri": x509.UniformResourceIdentifier,
    "san:email": x509.RFC822Name,
    "san:dns": x509.DNSName,
}


def fingerprint(der: bytes) -> str:
    """SHA-256 of the certificate, hex: what the audit record names."""
    return hashlib.sha256(der).hexdigest()


def thumbprint(der: bytes) -> str:
    """SHA-256 of the certificate, base64url without padding: RFC 8705 `x5t#S256`."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    return [(a.rfc4514_attribute_name.upper(), str(a.value)) for a in name]


def _subject(certificate: x509.Certificate, sources: Sequence[str]) -> str | None:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    attributes = _attributes(certificate.subject)
    for source in sources:
        if source in _SAN_TYPES:
            values = sans.get_values_for_type(_SAN_TYPES[source]) if sans is not None else []
            if values:
                return str(values[0])
        elif source == "dn":
            return certificate.subject.rfc4514_string()
        else:
            wanted = source.removeprefix("dn:").upper()
            for attribute, value in attributes:
                if attribute == wanted and value:
                    return value
    return None


def _matches(rule: CertRule, attributes: list[tuple[str, str]]) -> bool:
    have = {(name, value.casefold()) for name, value in attributes}
    return all((name.upper(), value.casefold()) in have for name, value in rule.match)


class CertificateIdentity:
    """One `client-cert` provider."""

    method = "client-cert"

    def __init__(self, name: str, config: ClientCertProvider) -> None:
        self.name = name
        self.config = config
        self._known: dict[bytes, Verified | AuthFailure] = {}

    def identify(self, der: bytes) -> Verified:
        found = self._known.get(der)
        if found is None:
            found = self._identify(der)
            if len(self._known) >= _KEPT:
                self._known.clear()
            self._known[der] = found
        if isinstance(found, AuthFailure):
            raise found
        return found

    def _identify(self, der: bytes) -> Verified | AuthFailure:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            return AuthFailure("the client certificate cannot be read")
        subject = _subject(certificate, self.config.subject)
        if subject is None:
            return AuthFailure("the client certificate names no subject this gateway accepts")
        attributes = _attributes(certificate.subject)
        roles = tuple(
            dict.fromkeys(role for rule in self.config.roles if _matches(rule, attributes) for role in rule.roles)
        )
        claims = {
            "dn": certificate.subject.rfc4514_string(),
            "issuer_dn": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x"),
            "cert_sha256": fingerprint(der),
        }
        try:
            subject_header = header_value(subject)
            roles_text = roles_header(roles)
        except ClaimError as error:
            return AuthFailure(str(error))
        principal = Principal(subject, roles, issuer=claims["issuer_dn"], method=self.method, claims=claims)
        expires = certificate.not_valid_after_utc.timestamp()
        return Verified(principal, self.name, expires, subject_header, roles_text)
