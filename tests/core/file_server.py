"""A real local HTTP server that serves files the way a platform's file host might."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Route:
    """One path's answer: a status, a body, headers; ``chunks`` streams it with no length."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: int = 0


class FileServer:
    """Serves ``routes`` on 127.0.0.1 and records every request's path and headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def origin(self) -> tuple[str, str]:
        return "http", f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found")
        if not route.chunks:
            return web.Response(status=route.status, body=route.body, headers=route.headers)
        response = web.StreamResponse(status=route.status, headers=route.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        size = -(-len(route.body) // route.chunks)
        for start in range(0, len(route.body), size):
            await response.write(route.body[start : start + size])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


async def serving() -> AsyncIterator[FileServer]:
    """Start a server, yield it, stop it."""
    server = FileServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
