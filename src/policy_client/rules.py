"""The local rules engine's policy: role-based allow and deny rules read from a YAML file.

    rules:
      - name: pharmacists-refill
        effect: allow                        # allow | deny
        roles: [pharmacist]                  # any of these; leave out to match every principal
        subjects: ["svc-*"]                  # globs; leave out to match every subject
        actions: ["hms.pharmacy.v1.Pharmacy/*", "GET refill"]
        resources: ["/v1/prescriptions/**"]  # globs; default "**" (everything)
        attributes: {tenant: "acme"}         # principal attributes, globs
        reason: pharmacists may refill
        headers: {x-gov-rule: refill}        # allow rules: obligations to add upstream
        cache_ttl: 30s                       # hint to callers that cache

Evaluation: a matching deny wins over any allow; with no matching rule the
answer is deny. `*` and `?` stay inside one `/` segment, `**` matches
anything. The revision is a hash of the file's bytes, so the same content
is the same revision wherever it is loaded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from policy_client.errors import RulesError
from policy_client.model import AddHeader, Decision, Obligation, PolicyRequest
from policy_client.patterns import GlobSet

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration such as 250ms, 30s, 5m (got {value!r})")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"expected a duration such as 250ms, 30s, 5m (got {value!r})")
    return float(match.group(1)) * _UNITS[match.group(2)]


Globs = Annotated[tuple[str, ...], Field(min_length=1)]


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    effect: Literal["allow", "deny"]
    subjects: Globs | None = None
    roles: Globs | None = None
    actions: Globs
    resources: Globs = ("**",)
    attributes: dict[str, str] = {}
    reason: str | None = None
    headers: dict[str, str] = {}
    cache_ttl: Annotated[float, BeforeValidator(parse_duration)] | None = None

    @model_validator(mode="after")
    def _headers_on_allow(self) -> _RuleModel:
        if self.headers and self.effect == "deny":
            raise ValueError("headers are obligations of an allow; a deny rule cannot have them")
        return self


class _RulesFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[_RuleModel, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    allow: bool
    actions: GlobSet
    resources: GlobSet
    decision: Decision
    subjects: GlobSet | None = None
    roles: frozenset[str] | None = None
    attributes: tuple[tuple[str, GlobSet], ...] = ()

    def matches(self, request: PolicyRequest) -> bool:
        principal = request.principal
        if self.roles is not None and self.roles.isdisjoint(principal.roles):
            return False
        if self.subjects is not None and not self.subjects.matches(principal.subject):
            return False
        if not self.actions.matches(request.action) or not self.resources.matches(request.resource):
            return False
        if self.attributes:
            have = dict(principal.attributes)
            return all(name in have and globs.matches(have[name]) for name, globs in self.attributes)
        return True


class RuleSet:
    """One revision of a rules file, compiled; `evaluate` does no I/O."""

    def __init__(self, rules: tuple[Rule, ...], revision: str) -> None:
        self.rules = rules
        self.revision = revision

    @classmethod
    def parse(cls, content: bytes, source: str = "<rules>") -> RuleSet:
        revision = "sha256:" + hashlib.sha256(content).hexdigest()[:16]
        try:
            data = yaml.safe_load(content) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise RulesError([f"{source}: invalid YAML{where}: {getattr(error, 'problem', None) or error}"]) from None
        try:
            model = _RulesFileModel.model_validate(data)
        except ValidationError as error:
            raise RulesError([_describe(source, e) for e in error.errors()]) from None
        return cls(tuple(_compile(index, rule, revision) for index, rule in enumerate(model.rules)), revision)

    def evaluate(self, request: PolicyRequest) -> Decision:
        allowed: list[Rule] = []
        for rule in self.rules:
            if rule.matches(request):
                if not rule.allow:
                    return rule.decision
                allowed.append(rule)
        if not allowed:
            return Decision(False, f"no rule allows {request.action} on {request.resource}", self.revision)
        if len(allowed) == 1:
            return allowed[0].decision
        return _merge(allowed)


def load_rules(path: Path) -> RuleSet:
    """Read and compile a rules file; RulesError names every problem."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise RulesError([f"{path}: cannot read the rules file: {error.strerror or error}"]) from None
    return RuleSet.parse(content, str(path))


def _compile(index: int, model: _RuleModel, revision: str) -> Rule:
    name = model.name or f"rules[{index}]"
    allow = model.effect == "allow"
    reason = model.reason or f"{'allowed' if allow else 'denied'} by rule {name}"
    obligations: tuple[Obligation, ...] = tuple(AddHeader(k.lower(), v) for k, v in model.headers.items())
    return Rule(
        name=name,
        allow=allow,
        actions=GlobSet(model.actions),
        resources=GlobSet(model.resources),
        subjects=GlobSet(model.subjects) if model.subjects is not None else None,
        roles=frozenset(model.roles) if model.roles is not None else None,
        attributes=tuple((k, GlobSet((v,))) for k, v in model.attributes.items()),
        decision=Decision(allow, reason, revision, model.cache_ttl, obligations),
    )


def _merge(allowed: list[Rule]) -> Decision:
    """Several allow rules matched: the first one's reason, every one's obligations, the shortest TTL."""
    first = allowed[0].decision
    obligations = tuple(dict.fromkeys(o for rule in allowed for o in rule.decision.obligations))
    ttls = [rule.decision.ttl for rule in allowed if rule.decision.ttl is not None]
    return replace(first, obligations=obligations, ttl=min(ttls) if ttls else None)


def _describe(source: str, error: Any) -> str:
    where = ""
    for part in error["loc"]:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = error["msg"].replace("Value error, ", "").replace("Input should be", "expected")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{source}: {where or '(top level)'}: {message}"
