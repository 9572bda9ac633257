"""Request and trace ids: the right length, lower-case hex, never repeated, not shared with a forked child."""

from __future__ import annotations

import os
import re

import pytest

from edge import ids

HEX = re.compile(r"[0-9a-f]+")


def test_ids_are_hex_of_the_promised_length_and_unique_across_refills() -> None:
    taken = [ids.request_id() for _ in range(3 * ids.BATCH // 16)]
    traces = [ids.trace_ids() for _ in range(ids.BATCH // 24 + 5)]
    assert all(len(i) == 32 and HEX.fullmatch(i) for i in taken)
    assert all(len(t) == 48 and HEX.fullmatch(t) for t in traces)
    assert len(set(taken)) == len(taken)
    assert len(set(traces)) == len(traces)


def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    ids.request_id()  # the buffer now holds bytes the child would otherwise hand out too
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ids.request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != ids.request_id()


@pytest.mark.parametrize(
    ("given", "kept"),
    [("req-123", True), ("x" * 200, True), ("x" * 201, False), ("", False), (None, False), (b"req-bin", False)],
)
def test_caller_request_id_kept_only_when_usable(given: object, kept: bool) -> None:
    chosen = ids.caller_request_id(given)
    if kept:
        assert chosen == given
    else:
        assert chosen != given and len(chosen) == 32 and int(chosen, 16) >= 0
