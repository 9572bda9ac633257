"""Client library of the governance service (HMS-GOV): `PolicyClient.check(request) -> Decision`.

Any service can use it: it imports nothing from `edge`. Engines: the local
rules file (`LocalRules`, embedded default), the governance gRPC service
(`GovernanceService`, TLS or mTLS) and OPA's REST data API (`Opa`); the
client puts a decision cache, a timeout and a circuit breaker in front of
whichever is configured. Importing this package loads no transport: grpc and
aiohttp are imported only when their engine is built.

    async with PolicyClient(ClientSettings(LocalRules(Path("rules.yaml")))) as policy:
        decision = await policy.check(PolicyRequest(Principal("alice", ("pharmacist",)), "GET refill", "/v1/refill"))
"""

from policy_client.client import PolicyClient
from policy_client.errors import CircuitOpen, PolicyError, PolicyTimeout, RulesError
from policy_client.model import ANONYMOUS, AddHeader, Decision, Obligation, PolicyRequest, Principal
from policy_client.settings import ClientSettings, GovernanceService, LocalRules, Opa, Tls

__all__ = [
    "ANONYMOUS",
    "AddHeader",
    "CircuitOpen",
    "ClientSettings",
    "Decision",
    "GovernanceService",
    "LocalRules",
    "Obligation",
    "Opa",
    "PolicyClient",
    "PolicyError",
    "PolicyRequest",
    "PolicyTimeout",
    "Principal",
    "RulesError",
    "Tls",
]
