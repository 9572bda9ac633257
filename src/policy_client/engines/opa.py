"""The OPA engine: Open Policy Agent's REST data API.

`POST <url>/v1/data/<path>` with `{"input": {principal, action, resource,
attributes}}`; the result is a boolean, or an object `{"allow": bool,
"reason": str}` (optionally `"revision"` and `"headers"`, obligations to add
upstream). No result (the rule is undefined for this input) is a deny, as
the default of a policy is. A non-200 answer, a transport error or a result
of another shape is a `PolicyError`. One aiohttp session owns the pool of
keep-alive connections to OPA.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from policy_client.errors import PolicyError
from policy_client.model import AddHeader, Decision, PolicyRequest
from policy_client.settings import Opa, Tls


def client_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def opa_input(request: PolicyRequest) -> dict[str, Any]:
    principal = request.principal
    return {
        "principal": {
            "subject": principal.subject,
            "roles": list(principal.roles),
            "attributes": dict(principal.attributes),
        },
        "action": request.action,
        "resource": request.resource,
        "attributes": dict(request.attributes),
    }


def decision_from_result(body: Any, revision: str = "") -> Decision:
    if not isinstance(body, dict):
        raise PolicyError(f"OPA answered {type(body).__name__}, expected a JSON object")
    if "result" not in body:
        return Decision(False, "the policy is undefined for this input", revision)
    result = body["result"]
    if isinstance(result, bool):
        return Decision(result, "allowed by OPA" if result else "denied by OPA", revision)
    if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
        raise PolicyError('OPA result is neither a boolean nor an object with a boolean "allow"')
    allow: bool = result["allow"]
    reason = result.get("reason") or ("allowed by OPA" if allow else "denied by OPA")
    headers = result.get("headers", {})
    if not isinstance(headers, dict):
        raise PolicyError('OPA result "headers" is not an object')
    obligations = tuple(AddHeader(str(k).lower(), str(v)) for k, v in headers.items()) if allow else ()
    return Decision(allow, str(reason), str(result.get("revision") or revision), None, obligations)


class OpaEngine:
    immediate = False
    revision = ""

    def __init__(self, settings: Opa) -> None:
        self.settings = settings
        self.url = f"{settings.url.rstrip('/')}/v1/data/{settings.path.strip('/')}"
        self._headers = {"Content-Type": "application/json"}
        if settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ssl_context: ssl.SSLContext | bool = client_context(self.settings.tls) if self.settings.tls else True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=64),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def evaluate(self, request: PolicyRequest, budget: float) -> Decision:
        if self._session is None:
            raise PolicyError("OPA engine not started")
        payload = json.dumps({"input": opa_input(request)}, separators=(",", ":"))
        try:
            async with self._session.post(
                self.url, data=payload, headers=self._headers, timeout=aiohttp.ClientTimeout(total=max(budget, 0.001))
            ) as response:
                if response.status != 200:
                    raise PolicyError(f"OPA {self.url} answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as error:
            raise PolicyError(f"OPA {self.url}: {type(error).__name__}: {error}") from None
        except ValueError:
            raise PolicyError(f"OPA {self.url} answered something that is not JSON") from None
        return decision_from_result(body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
