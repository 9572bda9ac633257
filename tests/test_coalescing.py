import asyncio

from edge.coalescing import WriteCoalescer


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.broken = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.closing or self.broken:
            raise RuntimeError("write to a closed transport")
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


async def test_writes_of_one_pass_leave_together_in_order_at_the_next() -> None:
    coalescer = WriteCoalescer(asyncio.get_running_loop())
    first, second = Transport(), Transport()
    coalescer.write(first, b"a")  # type: ignore[arg-type]
    coalescer.write(second, b"x")  # type: ignore[arg-type]
    coalescer.write(first, b"b")  # type: ignore[arg-type]
    assert first.written == [] and second.written == []
    await asyncio.sleep(0)
    assert first.written == [b"a", b"b"]
    assert second.written == [b"x"]
    coalescer.write(first, b"c")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert first.written == [b"a", b"b", b"c"]


async def test_flush_writes_at_once_and_the_scheduled_pass_finds_nothing_left() -> None:
    coalescer = WriteCoalescer(asyncio.get_running_loop())
    transport = Transport()
    coalescer.write(transport, b"reply")  # type: ignore[arg-type]
    coalescer.flush()
    assert transport.written == [b"reply"]
    await asyncio.sleep(0)
    assert transport.written == [b"reply"]


async def test_a_transport_closed_before_the_pass_ends_gets_nothing_and_the_others_still_do() -> None:
    coalescer = WriteCoalescer(asyncio.get_running_loop())
    gone, alive = Transport(), Transport()
    coalescer.write(gone, b"lost")  # type: ignore[arg-type]
    coalescer.write(alive, b"kept")  # type: ignore[arg-type]
    gone.closing = True
    await asyncio.sleep(0)
    assert gone.written == []
    assert alive.written == [b"kept"]


async def test_a_transport_that_fails_its_write_is_aborted_and_the_others_still_get_theirs() -> None:
    coalescer = WriteCoalescer(asyncio.get_running_loop())
    broken, alive = Transport(), Transport()
    broken.broken = True
    coalescer.write(broken, b"x")  # type: ignore[arg-type]
    coalescer.write(alive, b"kept")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert broken.aborted
    assert alive.written == [b"kept"]
