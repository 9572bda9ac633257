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
from edge.pipeline.quota.headers import quota_denial, show_on_reply, unavailable_denial
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
        self._allowed = {rule: metrics.cell(rule.name, "allowed", limiter.mode) for rule in rules.rules}
        self.decide_now = self._decide_now if self._memory is not None else None

    async def __call__(self, call: Call) -> Denial | None:
        checks = self._checks(call)
        if not checks:
            return None
        if self._memory is not None:
            return self._judged_in_memory(call, checks)
        verdicts, outcome = await self.limiter.decide(checks)
        return self._answer(call, checks, verdicts, outcome)

    def _decide_now(self, call: Call) -> Denial | None:
        """The memory store's whole decision, without a coroutine (the pipeline's `decide_now`)."""
        checks = self._checks(call)
        return self._judged_in_memory(call, checks) if checks else None

    def _checks(self, call: Call) -> list[Check]:
        """The (rule, key) pairs to decide; rules whose key is missing are recorded as skipped."""
        rules = self.rules.select(call)
        if not rules:
            return []
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
        return checks

    def _judged_in_memory(self, call: Call, checks: list[Check]) -> Denial | None:
        assert self._memory is not None
        verdicts, ok = self._memory.judge(checks)
        if ok and len(verdicts) == 1 and verdicts[0][0]:
            self._allowed_alone(call, call.decisions["quota"], checks[0][0], verdicts[0])
            return None
        return self._answer(call, checks, verdicts, (PASSED if ok else DENIED)["memory"])

    def _answer(self, call: Call, checks: list[Check], verdicts: list[Verdict], outcome: Outcome) -> Denial | None:
        shown = self._account(call.decisions["quota"], checks, verdicts, outcome)
        if outcome.unavailable:
            closed = [rule.name for i, (rule, _) in enumerate(checks) if outcome.mode_of(i) == "closed"]
            return unavailable_denial(call, closed)
        if not outcome.passed:
            denied = [(rule, v) for (rule, _), v in zip(checks, verdicts, strict=True) if not v[0]]
            return quota_denial(call, shown, [(r, v) for r, v in denied if not r.shadow])
        if self.headers_on_allowed and shown:
            show_on_reply(call, shown)
        return None

    def _account(
        self, record: dict[str, Any], checks: list[Check], verdicts: list[Verdict], outcome: Outcome
    ) -> list[tuple[Rule, Verdict]]:
        """Record and count each rule's result; return the (rule, verdict) pairs the headers show.

        An allowed rule in the limiter's own mode (every rule of nearly every
        call) is counted in the cell the stage keeps for it: no key is built.
        """
        append = record["rules"].append
        shown = []
        passed = outcome.passed
        if not passed:
            record["allowed"] = False
        modes = outcome.modes
        mode = outcome.mode
        cells = self._allowed if modes is None and mode == self.limiter.mode else None
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
            if cells is not None and result == "allowed":
                cells[rule][0] += 1
            else:
                self.metrics.count(rule.name, result, mode)
            append({"rule": rule.name, "result": result, "mode": mode, "remaining": remaining})
            if remaining >= 0 and not rule.shadow:
                shown.append((rule, verdict))
        return shown

    def _allowed_alone(self, call: Call, record: dict[str, Any], rule: Rule, verdict: Verdict) -> None:
        """What `_account` and the headers do for one rule that allowed in memory, without their loops.

        It is most calls of most stages (a phase usually has one rule), and
        skipping the general path saves about a tenth of the stage.
        """
        self._allowed[rule][0] += 1
        record["rules"].append({"rule": rule.name, "result": "allowed", "mode": "memory", "remaining": verdict[1]})
        if self.headers_on_allowed and verdict[1] >= 0 and not rule.shadow:
            show_on_reply(call, [(rule, verdict)])
