"""The `policy:` section of `edge.yaml` and the per-route `policy:` override of the routes file.

With no `policy` section the policy stage is not installed and every call is
allowed, as before. With one, every call asks the configured engine — a
local rules file (the embedded default), the governance gRPC service (TLS or
mutual TLS), or OPA — through `policy_client`, behind its decision cache,
timeout and circuit breaker. `on_error` says what a call gets when no
decision can be made: `deny` (503, fail closed) or `allow` (fail open,
audited as such); a route can override it, hide deny reasons behind its own
text, or `skip` the check (public routes).

    policy:
      engine: local            # local | grpc | opa
      rules: rules.yaml        # local
      target: gov:50061        # grpc; with tls: {ca, cert, key} or plaintext: true
      url: http://opa:8181     # opa, with path: hms/edge/allow
      timeout: 200ms
      cache: {allow_ttl: 30s, deny_ttl: 5s}
      on_error: deny
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from edge.config.base import Duration, Frozen
from policy_client.errors import RulesError
from policy_client.rules import load_rules
from policy_client.settings import ClientSettings, EngineSettings, GovernanceService, LocalRules, Opa, Tls

OnError = Literal["deny", "allow"]
_ENGINE_KEYS = {
    "local": ("rules", "watch_interval"),
    "grpc": ("target", "tls", "plaintext", "revision_poll"),
    "opa": ("url", "path", "tls", "token"),
}


class PolicyTLS(Frozen):
    ca: Path | None = Field(default=None, description="CA bundle the policy service's certificate chains to")
    cert: Path | None = Field(default=None, description="client certificate, for mutual TLS")
    key: Path | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _cert_and_key(self) -> PolicyTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (client certificate for mutual TLS)")
        return self


class PolicyCache(Frozen):
    allow_ttl: Duration = 30.0
    deny_ttl: Duration = 5.0
    max_entries: int = Field(default=100_000, ge=0)


class PolicyBreaker(Frozen):
    failures: int = Field(default=5, ge=1, description="failed checks in a row that open the breaker")
    reset: Duration = Field(default=5.0, gt=0, description="how long it stays open before one trial call")


class Policy(Frozen):
    engine: Literal["local", "grpc", "opa"] = "local"
    rules: Path | None = Field(default=None, description="local: the rules file")
    watch_interval: Duration = Field(default=1.0, description="local: how often the rules file is checked for changes")
    target: str | None = Field(default=None, description="grpc: host:port of the governance service")
    tls: PolicyTLS | None = None
    plaintext: bool = Field(default=False, description="grpc: no TLS (loopback, tests)")
    revision_poll: Duration = Field(default=2.0, description="grpc: how often the service's revision is asked")
    url: str | None = Field(default=None, description="opa: base URL such as http://opa:8181")
    path: str | None = Field(default=None, description="opa: data path such as hms/edge/allow")
    token: str | None = Field(default=None, description="opa: bearer token")
    timeout: Duration = Field(default=0.2, gt=0)
    cache: PolicyCache = PolicyCache()
    breaker: PolicyBreaker = PolicyBreaker()
    on_error: OnError = "deny"
    deny_message: str | None = Field(default=None, description="the text a denied caller reads instead of the reason")
    attributes: tuple[str, ...] = Field(default=(), description="principal claims passed to the policy as attributes")

    @model_validator(mode="after")
    def _engine_keys(self) -> Policy:
        needed = {"local": ("rules",), "grpc": ("target",), "opa": ("url", "path")}[self.engine]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f"engine {self.engine} needs {' and '.join(missing)}")
        if self.engine == "grpc" and (self.tls is None) == (not self.plaintext):
            raise ValueError("engine grpc needs either tls (ca; cert and key for mutual TLS) or plaintext: true")
        stray = list(
            dict.fromkeys(
                key
                for engine, keys in _ENGINE_KEYS.items()
                if engine != self.engine
                for key in keys
                if key in self.model_fields_set and key not in _ENGINE_KEYS[self.engine]
            )
        )
        if stray:
            raise ValueError(f"{', '.join(stray)} do not apply to engine {self.engine}")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"url: expected http://host:port or https://host:port (got {self.url!r})")
        return self

    def client_settings(self) -> ClientSettings:
        """The `policy_client` settings this section stands for."""
        return ClientSettings(
            engine=self._engine_settings(),
            timeout=self.timeout,
            allow_ttl=self.cache.allow_ttl,
            deny_ttl=self.cache.deny_ttl,
            max_entries=self.cache.max_entries,
            breaker_failures=self.breaker.failures,
            breaker_reset=self.breaker.reset,
        )

    def _engine_settings(self) -> EngineSettings:
        tls = Tls(self.tls.ca, self.tls.cert, self.tls.key, self.tls.server_name) if self.tls else None
        if self.engine == "local":
            assert self.rules is not None
            return LocalRules(self.rules, self.watch_interval)
        if self.engine == "grpc":
            assert self.target is not None
            return GovernanceService(self.target, tls, self.revision_poll)
        assert self.url is not None and self.path is not None
        return Opa(self.url, self.path, tls, self.token)


class RoutePolicy(Frozen):
    """A route's own policy settings; unset ones follow the `policy` section (without one, they do nothing)."""

    skip: bool = Field(default=False, description="no policy check (public routes)")
    on_error: OnError | None = None
    deny_message: str | None = None


def check_policy(policy: Policy | None, config_path: Path) -> list[str]:
    """Files the engine reads at start must be there, and a local rules file must load.

    So `edge check` lists these problems, and `serve` never starts without them.
    """
    if policy is None:
        return []
    problems = []
    if policy.tls is not None:
        for name in ("ca", "cert", "key"):
            path = getattr(policy.tls, name)
            if path is not None and not path.is_file():
                problems.append(f"{config_path}: policy.tls.{name}: file not found: {path}")
    if policy.rules is not None:
        try:
            load_rules(policy.rules)
        except RulesError as error:
            problems.extend(error.problems)
    return problems
