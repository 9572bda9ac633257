"""The quota pipeline stage: select the rules a call meets, decide them at once, answer or go on.

One config yields two stages: `pre_auth` (rules keyed by client address,
placed before identity so floods are turned away before any token is
checked) and `post_auth` (after identity and policy, so subjects, roles and
claims are known). Both add to one record, `call.decisions["quota"]`:
`{"allowed": bool, "rules": [{"rule", "result", "mode", "remaining"}...],
"skipped": [names]}`, where result is allowed | denied | shadow_denied |
not_counted and mode is memory | redis | degraded (Redis down, counted
locally) | open | closed. Keys are not recorded: they can hold addresses,
subjects or API keys. With the memory store the stage never suspends.
"""

from __future__ import annotations

from typing import Any

from edge.call import Call, Denial
from edge.config.quota import Phase
from edge.pipeline.quota.headers import quota_denial, rate_limit_headers, show_on_reply, unavailable_denial
from edge.pipeline.quota.limiter import DENIED, PASSED, Limiter, Outcome
from edge.pipeline.quota.metrics import QuotaMetrics
from edge.pipeline.quota.rules import Check, Rule, RuleSet
from edge.pipeline.quota.verdict import Verdict


class QuotaStage:
    def __init__(
        self, phase: Phase, rules: RuleSet, limiter: Limiter, metrics: QuotaMetrics, headers_on_allowed: bool = True
    ) -> None:
        self.phase = phase
        self.rules = rules
        self.limiter = limiter
        self.metrics = metrics
        self.headers_on_allowed = headers_on_allowed
        self._memory = limiter.local if limiter.shared is None else None

    async def __call__(self, call: Call) -> Denial | None:
        rules = self.rules.select(call)
        if not rules:
            return None
        checks = []
        skipped = None
        for rule in rules:
            key = rule.key(call)
            if key is None:
                if skipped is None:
                    skipped = []
                skipped.append(rule.name)
                self.metrics.count(rule.name, "skipped", self.limiter.mode)
            else:
                checks.append((rule, key))
        record: dict[str, Any] | None = call.decisions.get("quota")
        if record is None:
            record = call.decisions["quota"] = {"allowed": True, "rules": []}
        if skipped:
            record.setdefault("skipped", []).extend(skipped)
        if not checks:
            return None
        if self._memory is not None:
            verdicts, ok = self._memory.judge(checks)
            outcome = (PASSED if ok else DENIED)["memory"]
        else:
            verdicts, outcome = await self.limiter.decide(checks)
        shown = self._account(record, checks, verdicts, outcome)
        if outcome.unavailable:
            closed = [rule.name for i, (rule, _) in enumerate(checks) if outcome.mode_of(i) == "closed"]
            return unavailable_denial(call, closed)
        if not outcome.passed:
            denied = [(rule, v) for (rule, _), v in zip(checks, verdicts, strict=True) if not v[0]]
            return quota_denial(call, shown, [(r, v) for r, v in denied if not r.shadow])
        if self.headers_on_allowed and shown:
            show_on_reply(call, rate_limit_headers(shown, call.reply_headers))
        return None

    def _account(
        self, record: dict[str, Any], checks: list[Check], verdicts: list[Verdict], outcome: Outcome
    ) -> list[tuple[Rule, Verdict]]:
        """Record and count each rule's result; return the (rule, verdict) pairs the headers show."""
        append = record["rules"].append
        shown = []
        decisions = self.metrics.decisions
        passed = outcome.passed
        if not passed:
            record["allowed"] = False
        modes = outcome.modes
        mode = outcome.mode
        for index, check in enumerate(checks):
            rule = check[0]
            verdict = verdicts[index]
            if modes is not None:
                mode = modes[index]
            allowed, remaining = verdict[0], verdict[1]
            if allowed:
                result = "allowed" if passed else "not_counted"
            else:
                result = "shadow_denied" if rule.shadow else "denied"
            decisions[rule.name, result, mode] += 1
            append({"rule": rule.name, "result": result, "mode": mode, "remaining": remaining})
            if remaining >= 0 and not rule.shadow:
                shown.append((rule, verdict))
        return shown
