"""What goes wrong when no decision can be made, as one small tree.

    PolicyError          no decision: the caller applies its fail-open / fail-closed setting
     +-- PolicyTimeout   the engine did not answer within the timeout
     +-- CircuitOpen     recent calls failed; the engine is not asked until the breaker resets
    RulesError           a rules file cannot be used (raised at load; a reload keeps the old rules)

A deny is not an error: it is a `Decision` with `allow=False`.
"""

from __future__ import annotations


class PolicyError(Exception):
    """No decision could be made (engine unreachable, failed, answered nonsense)."""


class PolicyTimeout(PolicyError):
    pass


class CircuitOpen(PolicyError):
    pass


class RulesError(ValueError):
    """A rules file is invalid; `problems` names each place, as `file: rules[2].effect: expected ...`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
