"""Route lookup speed: lookups/s for a table of 10 routes and one of 10,000, and their ratio.

The table indexes exact paths in a dict and templates and prefixes in segment
tries, so the ratio should stay near 1 for every kind. It times the index
(`resolve_http`), not `match_http`'s memory of recent answers, which would
answer these repeated lookups from a dict. Usage:
`.venv/bin/python scripts/bench_routes.py [--seconds 0.5]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from edge.routes import Route, RouteTable
from edge.transcode.template import parse_template

Lookup = Callable[[], object]


def build(count: int) -> RouteTable:
    """`count` routes, a third of each kind, each for its own service `/svc{i}`."""
    routes: list[Route] = []
    for i in range((count + 2) // 3):
        template, rewrite = parse_template(f"/svc{i}/items/{{id}}"), parse_template("/items/{id}")
        routes += [
            Route(f"exact-{i}", "exact", f"/svc{i}/health", "svc", len(routes)),
            Route(
                f"template-{i}",
                "template",
                template.source,
                "svc",
                len(routes) + 1,
                template=template,
                rewrite=rewrite.source,
                rewrite_template=rewrite,
            ),
            Route(f"prefix-{i}", "prefix", f"/svc{i}/files", "svc", len(routes) + 2, rewrite="/files"),
        ]
    return RouteTable(routes[:count])


def cases(table: RouteTable, services: int) -> dict[str, Lookup]:
    """One lookup per kind, against the last service (the deepest in file order)."""
    last = services - 1
    return {
        "exact": lambda: table.resolve_http("GET", "api.example.com", f"/svc{last}/health"),
        "template": lambda: table.resolve_http("GET", "api.example.com", f"/svc{last}/items/RX-42"),
        "prefix": lambda: table.resolve_http("GET", "api.example.com", f"/svc{last}/files/a/b/c"),
    }


def rate(lookup: Lookup, seconds: float) -> float:
    """Lookups per second, the best of three timed runs of about `seconds` each."""
    assert lookup() is not None
    batch, best = 1000, 0.0
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(batch):
                lookup()
            done += batch
        best = max(best, done / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each timed run")
    args = parser.parse_args()
    small, large = build(10), build(10_000)
    small_cases, large_cases = cases(small, 3), cases(large, 3333)
    print(f"{'case':<10} {'10 routes':>14} {'10,000 routes':>15} {'ratio':>7}")
    for name in small_cases:
        fast, slow = rate(small_cases[name], args.seconds), rate(large_cases[name], args.seconds)
        print(f"{name:<10} {fast:>12,.0f}/s {slow:>13,.0f}/s {fast / slow:>7.2f}")


if __name__ == "__main__":
    main()
