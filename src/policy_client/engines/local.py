"""The embedded engine: a local rules file, evaluated in process and reloaded when it changes.

A watcher task compares the file's (mtime, size, inode) every `watch_interval`
seconds and reads it again off the event loop when they change. A reload is
all or nothing: an invalid file is logged and the rules in force stay. The
revision is the content hash, so the decision cache drops every answer the
moment new rules are in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import suppress
from pathlib import Path

from policy_client.errors import RulesError
from policy_client.model import Decision, PolicyRequest
from policy_client.rules import RuleSet, load_rules

log = logging.getLogger("policy_client.local")


class LocalEngine:
    immediate = True

    def __init__(self, path: Path, watch_interval: float = 1.0) -> None:
        self.path = path
        self.watch_interval = watch_interval
        self._signature = _signature(path)
        self.rules: RuleSet = load_rules(path)
        self.last_error: list[str] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def revision(self) -> str:
        return self.rules.revision

    async def evaluate(self, request: PolicyRequest, budget: float = 0.0) -> Decision:
        return self.rules.evaluate(request)

    async def start(self) -> None:
        if self._task is None and self.watch_interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"policy-rules-watch {self.path}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> list[str] | None:
        """Read the file again; returns its problems (the old rules stay), or None when it took."""
        try:
            rules = await asyncio.to_thread(load_rules, self.path)
        except RulesError as error:
            self.last_error = error.problems
            log.error("rules reload rejected, keeping revision %s:\n  %s", self.revision, "\n  ".join(error.problems))
            return error.problems
        self.last_error = None
        if rules.revision != self.rules.revision:
            log.info("rules reloaded from %s: %d rules, revision %s", self.path, len(rules.rules), rules.revision)
        self.rules = rules
        return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            signature = _signature(self.path)
            if signature is not None and signature != self._signature:
                self._signature = signature
                await self.reload()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
