"""A loopback TCP proxy whose link the tests can cut and restore (toxiproxy is not available)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TCPProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = True
        self._drop_replies = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones (the far side looks dead)."""
        self._open = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def drop_replies(self) -> None:
        """Keep forwarding client->server bytes but discard every server->client byte.

        The server still receives and acts on what the client sends; its answers (a broker's
        publisher confirms, say) are lost on the way back, as on a link that failed one way.
        """
        self._drop_replies = True

    def restore(self) -> None:
        self._open = True
        self._drop_replies = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer, replies=True)
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False
    ) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self._drop_replies:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@contextlib.asynccontextmanager
async def tcp_proxy(host: str, port: int) -> AsyncIterator[TCPProxy]:
    proxy = TCPProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
