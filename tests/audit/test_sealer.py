"""The sealing process a gateway's audit trail runs in: what reaches the trail, and what the process leaves behind.

`AuditLog.from_config` (what `edge serve` uses) seals in a forked child when
the process is single-threaded, as `edge serve` is at that point; the test
process is not (grpc's threads), so each case runs a short script in a fresh
interpreter and reads what a user reads: the files, `edge audit verify`, the
process's stdout, the stats, which processes are left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from tests.audit.conftest import Keys

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sealing process is used on Linux")

PRELUDE = """
import asyncio, json, os, signal, socket, sys, threading, time
from decimal import Decimal
from pathlib import Path
from edge.call import Call, Metadata, Peer, Reply
from edge.config.audit import Audit
from edge.pipeline.audit import AuditLog

FOLDER, KEY = Path(sys.argv[1]), sys.argv[2]

def a_call(n, **decisions):
    call = Call(ingress="http", method="GET", path=f"/v1/{n}", peer=Peer("127.0.0.1"), metadata=Metadata())
    call.decisions.update(decisions)
    return call

def section(**fields):
    sinks = [{"type": "file", "path": str(FOLDER / "audit.jsonl")}]
    return Audit.model_validate({"sinks": sinks, "spool": {"path": str(FOLDER / "spool")}, **fields})

def signed():
    return section(signing_key=KEY, checkpoints={"every": 50, "interval": "1h"})

def children():
    me = os.getpid()
    return [int(pid) for pid in Path(f"/proc/{me}/task/{me}/children").read_text().split()]

async def until(predicate):
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError

def say(**fields):
    print(json.dumps({"said": fields}), flush=True)
"""


def run_script(tmp_path: Path, body: str, keys: Keys | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """What the script said, and the other lines of its stdout."""
    script = PRELUDE + body + "\nasyncio.run(run())\n"
    key = str(keys.private) if keys else ""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), key], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    said = [json.loads(line)["said"] for line in lines if line.startswith('{"said"')]
    return said, [line for line in lines if not line.startswith('{"said"')]


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def verify(tmp_path: Path, keys: Keys | None, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    key = ["--key", str(keys.public)] if keys else []
    assert main(["audit", "verify", str(tmp_path / "audit.jsonl"), *key]) == 0
    return capsys.readouterr().out


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_every_record_goes_through_a_child_process_and_verifies(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    said, _ = run_script(
        tmp_path,
        """
async def run():
    audit = AuditLog.from_config(signed(), "gw-1")
    await audit.start()
    say(children=children())
    for n in range(120):
        audit.record(a_call(n), Reply(http_status=200 if n % 3 else 403))
        if n % 40 == 0:
            await asyncio.sleep(0.01)
    await until(lambda: audit.stats()["written"] == 120)
    say(stats=audit.stats(), tallied=sum(audit.writer.tally.snapshot().calls.values()))
    await audit.aclose()
    say(children=children())
""",
        keys,
    )
    assert len(said[0]["children"]) == 1 and said[2]["children"] == []
    assert said[1]["tallied"] == 120 and said[1]["stats"]["seq"] == 122  # 120 calls, 2 checkpoints
    calls = [r for r in records(tmp_path) if r["kind"] == "call"]
    assert [r["path"] for r in calls] == [f"/v1/{n}" for n in range(120)]
    assert [r["status"] for r in calls][:3] == [403, 200, 200]
    assert records(tmp_path)[-1]["kind"] == "checkpoint"
    out = verify(tmp_path, keys, capsys)
    assert "instance 'gw-1': 123 records" in out and "OK: the chain is intact" in out


def test_a_sealer_that_dies_leaves_the_writer_in_a_thread_and_the_lost_batch_is_declared(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    said, _ = run_script(
        tmp_path,
        """
async def run():
    audit = AuditLog.from_config(signed(), "gw-1")
    await audit.start()
    audit.record(a_call(1), Reply())
    await until(lambda: audit.stats()["written"] == 1)
    os.kill(audit._sealer.pid, signal.SIGKILL)
    audit.record(a_call(2), Reply())
    await until(lambda: audit.lost == 1)
    audit.record(a_call(3), Reply())
    await until(lambda: audit.stats()["written"] == 2)
    say(children=children(), threads=len(os.listdir("/proc/self/task")))
    await audit.aclose()
""",
        keys,
    )
    assert said[0]["children"] == [] and said[0]["threads"] > 1
    trail = records(tmp_path)
    assert [r["path"] for r in trail if r["kind"] == "call"] == ["/v1/1", "/v1/3"]
    (loss,) = [r for r in trail if r["kind"] == "loss"]
    assert (loss["sink"], loss["count"], loss["reason"]) == (None, 1, "not queued or not sealable")
    assert "OK: the chain is intact" in verify(tmp_path, keys, capsys)


def test_a_file_another_gateway_writes_fails_the_start_and_leaves_no_child(tmp_path: Path) -> None:
    said, _ = run_script(
        tmp_path,
        """
async def run():
    first = AuditLog.from_config(section(), "gw-1")
    await first.start()
    second = AuditLog.from_config(section(), "gw-2")
    try:
        await second.start()
    except Exception as error:
        say(error=f"{type(error).__name__}: {error}", children=children(), first=first._sealer.pid)
    await first.aclose()
""",
    )
    (failed,) = said
    assert (
        failed["error"].startswith("FileInUse: audit file") and "written by another gateway process" in failed["error"]
    )
    assert failed["children"] == [failed["first"]]


def test_the_stdout_sink_writes_to_the_gateways_stdout(tmp_path: Path) -> None:
    said, out = run_script(
        tmp_path,
        """
async def run():
    audit = AuditLog.from_config(Audit.model_validate({"sinks": [{"type": "stdout"}]}), "gw-1")
    await audit.start()
    say(children=len(children()))
    audit.record(a_call(7), Reply())
    await audit.aclose()
""",
    )
    assert said == [{"children": 1}]
    (record,) = [json.loads(line) for line in out]
    assert (record["path"], record["seq"], record["instance"]) == ("/v1/7", 1, "gw-1")


def test_decisions_marshal_cannot_carry_are_written_as_the_thread_wrote_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_script(
        tmp_path,
        """
async def run():
    audit = AuditLog.from_config(section(), "gw-1")
    await audit.start()
    audit.record(a_call(1, quota={"cost": Decimal("1.50"), "window": ("a", 1)}), Reply())
    await audit.aclose()
""",
    )
    (record,) = records(tmp_path)
    assert record["decisions"] == {"quota": {"cost": "1.50", "window": ["a", 1]}}
    assert "OK: the chain is intact" in verify(tmp_path, None, capsys)


def test_the_child_holds_none_of_the_gateways_sockets_and_ignores_its_signals(tmp_path: Path) -> None:
    said, _ = run_script(
        tmp_path,
        """
async def run():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    audit = AuditLog.from_config(section(), "gw-1")
    await audit.start()
    listener.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    (child,) = children()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # Ctrl-C, or a SIGTERM to the process group
        os.kill(child, signum)
    audit.record(a_call(1), Reply())
    await until(lambda: audit.stats()["written"] == 1)
    say(refused=refused, alive=children() == [child])
    await audit.aclose()
""",
    )
    assert said == [{"refused": True, "alive": True}]
    assert [r["path"] for r in records(tmp_path)] == ["/v1/1"]


def test_a_process_with_threads_already_keeps_the_writer_in_a_thread(tmp_path: Path) -> None:
    said, _ = run_script(
        tmp_path,
        """
async def run():
    stop = threading.Event()
    threading.Thread(target=stop.wait).start()
    audit = AuditLog.from_config(section(), "gw-1")
    await audit.start()
    audit.record(a_call(1), Reply())
    await until(lambda: audit.stats()["written"] == 1)
    say(children=children())
    await audit.aclose()
    stop.set()
""",
    )
    assert said == [{"children": []}]
    assert [r["path"] for r in records(tmp_path)] == ["/v1/1"]


def test_the_child_dies_with_a_gateway_killed_with_kill_9(tmp_path: Path) -> None:
    script = (
        PRELUDE
        + """
async def run():
    audit = AuditLog.from_config(section(), "gw-1")
    await audit.start()
    say(child=audit._sealer.pid)
    await asyncio.sleep(60)

asyncio.run(run())
"""
    )
    gateway = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), ""], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert gateway.stdout is not None
        child = json.loads(gateway.stdout.readline())["said"]["child"]
        assert not gone(child)
        gateway.kill()
        gateway.wait(10)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    deadline = time.monotonic() + 5
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(child)
