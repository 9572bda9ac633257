"""Loopback plumbing shared by tests: a free port, and waiting until something listens on one."""

from __future__ import annotations

import asyncio
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None, seconds: float = 20.0) -> None:
    """Until 127.0.0.1:port accepts; fails early if `process` (the server) has exited."""
    async with asyncio.timeout(seconds):
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
