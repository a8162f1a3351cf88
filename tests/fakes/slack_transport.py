"""Delivering to the bot: Socket Mode envelopes over a websocket, or signed HTTP requests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack_blockkit import message_problem
from tests.fakes.slack_workspace import APP_ID, SIGNING_SECRET, SlackWorkspace

# Slack's slash-command guide: a response_url can be used "up to 5 times within 30 minutes".
RESPONSE_URL_USES = 5


class SlackTransport(SlackWorkspace):
    """Sends payloads through the bot's transport and serves the websocket and response URLs."""

    @property
    def connected(self) -> bool:
        """True while a bot holds a Socket Mode connection."""
        return bool(self._sockets)

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait for the bot's Socket Mode connection."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def send_command(
        self, payload: dict[str, str], *, retry_num: int = 0, url: str | None = None
    ) -> Any:
        """Deliver a slash command through the current transport (HTTP: to ``url`` if given)."""
        if self.mode == "socket":
            return await self._envelope("slash_commands", payload, accepts_response=True)
        return await self.post_signed(
            urlencode(payload), "application/x-www-form-urlencoded", retry_num=retry_num, url=url
        )

    async def send_event(
        self, payload: dict[str, Any], *, retry_num: int = 0, url: str | None = None
    ) -> Any:
        """Deliver an Events API callback through the current transport (HTTP: to ``url``)."""
        if self.mode == "socket":
            return await self._envelope("events_api", payload, retry_num=retry_num)
        return await self.post_signed(
            json.dumps(payload), "application/json", retry_num=retry_num, url=url
        )

    async def send_interactive(self, payload: dict[str, Any], *, url: str | None = None) -> Any:
        """Deliver a block action, shortcut or view submission through the current transport."""
        if self.mode == "socket":
            return await self._envelope("interactive", payload, accepts_response=True)
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(body, "application/x-www-form-urlencoded", url=url)

    async def post_signed(
        self,
        body: str,
        content_type: str,
        *,
        retry_num: int = 0,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        url: str | None = None,
    ) -> tuple[int, str]:
        """POST ``body`` to the bot's events URL (or ``url``: one of several instances behind a
        load balancer), signed as Slack signs it; (status, text)."""
        url = url or self.events_url
        assert url and self._session is not None
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with self._session.post(url, data=body.encode(), headers=headers) as r:
            text = await r.text()
            self.http_statuses.append(r.status)
            return r.status, text

    async def _envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response: bool = False,
        retry_num: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        await self.wait_connected()
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response,
            "retry_attempt": retry_num,
            "retry_reason": "timeout" if retry_num else "",
        }
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ack_waiters[envelope_id] = waiter
        await self._sockets[-1].send_str(json.dumps(envelope))
        return await asyncio.wait_for(waiter, timeout)

    # --- servers ------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    self.acks[envelope_id] = data
                    waiter = self._ack_waiters.pop(envelope_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._connected.clear()
        return ws

    def _apply_response(self, rid: str, body: dict[str, Any], deleting: bool) -> None:
        """What a response URL of a click on a private message does to what its user sees."""
        target = self.response_targets.get(rid)
        if target is None:
            return
        if deleting or body.get("replace_original"):
            if target in self.ephemerals:
                self.ephemerals.remove(target)
            if deleting:
                return
        shown = {
            "channel": target["channel"],
            "user": target["user"],
            "text": body.get("text", ""),
            "blocks": body.get("blocks") or [],
            "ts": target["ts"] if body.get("replace_original") else self._new_ts(),
            "thread_ts": target.get("thread_ts"),
        }
        self.ephemerals.append(shown)
        self.response_targets[rid] = shown

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        rid = request.match_info["rid"]
        used = self.response_uses.get(rid, 0)
        # The same message rules as chat.postEphemeral; Slack answers a bad one with HTTP 400
        # and the error in the body.
        deleting = bool(body.get("delete_original"))
        problem = None if deleting else message_problem(body, lambda _ref: None)
        if used >= RESPONSE_URL_USES:
            problem = "used_url"
        if problem is not None:
            self.refused_responses.append({**body, "_error": problem})
            await self._notify()
            return web.Response(status=404 if problem == "used_url" else 400, text=problem)
        self.response_uses[rid] = used + 1
        self.responses.append(body)
        self._apply_response(rid, body, deleting)
        await self._notify()
        return web.Response(text="ok")
