"""A small asyncio TCP proxy on 127.0.0.1 that injects network faults (Toxiproxy's toxics).

Modes (switch at any time with :meth:`FaultProxy.set_mode`; new bytes and connections follow it):

==============  ====================================================================================
``pass``        forward both ways untouched
``reset_peer``  accept, then close the client's connection with a TCP reset before any byte
``blackhole``   Toxiproxy's ``timeout=0``: accept and read, never forward and never answer
``latency``     delay each chunk from the upstream by ``latency_s``
``bandwidth``   send the upstream's bytes to the client at ``rate`` bytes/s (in 64-byte slices)
``slicer``      send the upstream's bytes to the client one byte per write, ``slice_delay_s`` apart
==============  ====================================================================================

It counts connections accepted and currently open, so a test can tell how often a route was tried
and whether connections leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

from tests.reliability.harness import BackgroundLoop

MODES = ("pass", "reset_peer", "blackhole", "latency", "bandwidth", "slicer")


class FaultProxy:
    """Listens on 127.0.0.1 (random port) and forwards to ``target_port``."""

    def __init__(
        self,
        loop: BackgroundLoop,
        target_port: int,
        mode: str = "pass",
        *,
        latency_s: float = 0.2,
        rate: int = 1024,
        slice_delay_s: float = 0.0005,
    ) -> None:
        self._loop = loop
        self.target_port = target_port
        self.mode = "pass"
        self.set_mode(mode)
        self.latency_s = latency_s
        self.rate = rate
        self.slice_delay_s = slice_delay_s
        self.accepted = 0
        self.open = 0
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self.port = 0

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; one of {MODES}")
        self.mode = mode

    def base_url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FaultProxy:
        self._loop.call(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()

            self._loop.call(close())

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.accepted += 1
            self.open += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            mode = self.mode
            if mode == "reset_peer":
                _reset(client_writer)
                return
            if mode == "blackhole":
                while await client_reader.read(65536):
                    pass
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, downstream=False),
                self._pipe(upstream_reader, client_writer, downstream=True),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
            with self._lock:
                self.open -= 1

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                mode = self.mode if downstream else "pass"
                if mode == "latency":
                    await asyncio.sleep(self.latency_s)
                    writer.write(data)
                elif mode == "bandwidth":
                    step = 64
                    for i in range(0, len(data), step):
                        writer.write(data[i : i + step])
                        await writer.drain()
                        await asyncio.sleep(step / self.rate)
                elif mode == "slicer":
                    for i in range(len(data)):
                        writer.write(data[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(self.slice_delay_s)
                else:
                    writer.write(data)
                await writer.drain()
        finally:
            # Half-close so the other side sees the end; a reset there ends the other pipe too.
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
