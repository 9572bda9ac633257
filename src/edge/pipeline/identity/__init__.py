"""Identity: who is calling. One stage for both front doors (see `stage.py`).

stage.py          IdentityStage: strip client identity headers, authenticate per route, set backend headers
jwt.py            bearer JWTs: refuse dangerous headers, verify with pyjwt against bound keys
keys.py           verification keys bound to algorithms; the JWKS cache (RemoteKeys)
tokens.py         the verified-token cache, keyed by SHA-256 of the token
introspection.py  opaque tokens through an RFC 7662 endpoint
certs.py          identity and roles from a verified client certificate
claims.py         subject and roles from claims; header-safe values
failures.py       AuthFailure (401) and IdentityUnavailable (503) and their replies
fetcher.py        the HTTP client protocol the stage depends on (implemented in edge.upstream.fetch)
"""

from edge.pipeline.identity.stage import IdentityStage

__all__ = ["IdentityStage"]
