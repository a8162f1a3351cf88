"""The fake Discord's REST API and CDN: login, commands, interaction callbacks, messages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from typing import Any

from aiohttp import web

from tests.fakes.discord_payloads import (
    ACK_DEADLINE_S,
    EPHEMERAL,
    JSON_TYPE,
    LOADING,
    Call,
    FakeInteraction,
    Refused,
    UploadedFile,
    command_problem,
    error_response,
    iso,
    modal_problem,
    ok_response,
    payload_problem,
    sniff_type,
)
from tests.fakes.discord_state import DiscordState


class DiscordRest(DiscordState):
    """REST routes as Discord answers them, checked the way Discord checks them."""

    # --- CDN ----------------------------------------------------------------------------------
    async def _serve_cdn(self, request: web.Request) -> web.Response:
        self.cdn_requests.append(request.match_info["path"])
        found = self._cdn.get(request.match_info["path"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=found[0], content_type=found[1])

    # --- REST ---------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.Response:
        call = Call(request.method, "/" + request.match_info["path"], dict(request.query), None, [])
        self.calls.append(call)
        hook, before = self.on_result_shown, set[str]()
        try:
            if request.content_type == "multipart/form-data":
                reader = await request.multipart()
                async for part in reader:
                    if part.name == "payload_json":  # type: ignore[union-attr]
                        call.json = json.loads(await part.text())  # type: ignore[union-attr]
                    else:
                        call.files.append(
                            UploadedFile(
                                part.name or "",
                                part.filename or "",  # type: ignore[union-attr]
                                part.headers.get("Content-Type", ""),
                                bytes(await part.read()),
                            )
                        )  # type: ignore[union-attr]
            elif request.can_read_body:
                call.json = await request.json()
            for rule in self._rejections:
                if rule[0](call):
                    self._rejections.remove(rule)
                    raise Refused(rule[1])
            before = self._results_shown() if hook is not None else set()
            bucket = self._bucket_of(call)
            if bucket is not None and (limited := self._over_limit(bucket)) is not None:
                raise Refused(limited)
            response = await self._route(request, call)
            if bucket is not None:
                response.headers.update(self._bucket_headers(bucket))
        except Refused as exc:
            response = exc.response
        call.status = response.status
        await self._notify()
        if hook is not None:
            # Users see the image the moment Discord has it, before the bot reads the answer.
            for message_id in self._results_shown() - before:
                await hook(self.messages[message_id])
        return response

    # --- rate limits --------------------------------------------------------------------------
    def _bucket_of(self, call: Call) -> tuple[str, str] | None:
        """The rate-limit bucket a request draws on: (kind, major parameter), or None."""
        parts = call.path.strip("/").split("/")
        if parts[0] == "webhooks" and len(parts) >= 3 and call.method != "DELETE":
            return "webhook", parts[2]  # keyed by the interaction token (api-docs#2701)
        # Discord docs: deleting messages has its own, higher limit; create and edit count here.
        if (
            parts[0] == "channels"
            and len(parts) in (3, 4)
            and parts[2] == "messages"
            and call.method in ("POST", "PATCH")
        ):
            return f"{call.method} channel messages", parts[1]
        return None

    def _window(self, bucket: tuple[str, str]) -> list[float]:
        limit, per = self.route_limits["webhook" if bucket[0] == "webhook" else "channel"]
        now = time.time()
        window = self._buckets.setdefault(bucket, [0.0, now + per, limit, per])
        if now >= window[1]:
            window[0], window[1] = 0.0, now + per
        return window

    def _over_limit(self, bucket: tuple[str, str]) -> web.Response | None:
        window = self._window(bucket)
        count, reset_at, limit, _per = window
        if count < limit:
            window[0] += 1
            return None
        wait = max(0.001, reset_at - time.time())
        self.rate_limited.append((bucket, wait))
        # Discord docs (Rate Limits, "Exceeding A Rate Limit"): 429, the usual headers plus
        # Retry-After, and this body; discord.py also wants the Via header Discord's edge adds.
        body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
        headers = {
            **self._bucket_headers(bucket),
            "Retry-After": str(math.ceil(wait)),
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
            "Content-Type": JSON_TYPE,
        }
        return web.Response(status=429, body=json.dumps(body).encode(), headers=headers)

    def _bucket_headers(self, bucket: tuple[str, str]) -> dict[str, str]:
        count, reset_at, limit, _per = self._window(bucket)
        now = time.time()
        return {
            "X-RateLimit-Limit": str(int(limit)),
            "X-RateLimit-Remaining": str(max(0, int(limit - count))),
            "X-RateLimit-Reset": f"{reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{max(0.0, reset_at - now):.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(bucket[0].encode()).hexdigest()[:16],
        }

    def _results_shown(self) -> set[str]:
        """Bot messages that show an image other than a preview, in the channel for everyone."""
        return {
            message_id
            for message_id, m in self.messages.items()
            if m["author"]["id"] == self.bot.id
            and not m["flags"] & EPHEMERAL
            and any(a["filename"] != "preview.jpg" for a in m["attachments"])
        }

    async def _route(self, request: web.Request, call: Call) -> web.Response:
        parts, method = call.path.strip("/").split("/"), request.method
        if parts[0] not in ("interactions", "webhooks") and (
            request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            return error_response(401, 0, "401: Unauthorized")
        if parts == ["users", "@me"]:
            return ok_response({**self.bot.payload(), "bot": True, "verified": True, "flags": 0})
        if parts == ["oauth2", "applications", "@me"]:
            return ok_response(
                {
                    "id": self.app_id,
                    "name": "imagine",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": self.mod.payload(),
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if parts == ["gateway", "bot"]:
            # Discord docs (Gateway, Get Gateway Bot): the URL, the recommended shard count and
            # the session start limit (max_concurrency: shards that may identify at once).
            return ok_response(
                {
                    "url": self.gateway_url,
                    "shards": self.min_shards or 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 86_400_000,
                        "max_concurrency": 1,
                    },
                }
            )
        if parts[0] == "applications" and parts[-1] == "commands":
            return self._commands(parts, method, call)
        if parts[0] == "interactions" and len(parts) == 4 and parts[3] == "callback":
            return self._callback(self._interaction(parts[2], ack=True), call)
        if parts[0] == "webhooks" and len(parts) == 3 and method == "POST":
            if parts[1] != self.app_id:
                return error_response(404, 10015, "Unknown Webhook")
            return self._followup(self._interaction(parts[2]), call)
        if parts[0] == "webhooks" and len(parts) == 5:
            it = self._interaction(parts[2])
            mid = it.original_id if parts[4] == "@original" else parts[4]
            if (
                mid is None
                or mid not in self.messages
                or self.messages[mid].get("_token") not in (it.token, None)
            ):
                return error_response(404, 10008, "Unknown Message")
            return self._edit_or_delete(self.messages[mid], method, call)
        if parts[:2] == ["guilds", self.guild_id] and len(parts) == 4 and parts[2] == "members":
            member = self.members.get(parts[3])
            if method != "GET":
                self.problems.append(f"unexpected request {method} {call.path}")
            if member is None:
                return error_response(404, 10007, "Unknown Member")
            return ok_response(member.member())
        if parts[0] == "channels" and parts[1] not in (self.channel_id, *self.channels):
            return error_response(404, 10003, "Unknown Channel")
        if parts[0] == "channels" and self.channel_blocked:
            return error_response(403, 50001, "Missing Access")
        if parts[0] == "channels" and len(parts) == 3 and method == "POST":
            return self._channel_post(call)
        if parts[0] == "channels" and len(parts) == 4 and parts[2] == "messages":
            message = self.messages.get(parts[3])
            if message is None or message["flags"] & EPHEMERAL:
                return error_response(404, 10008, "Unknown Message")
            if method == "GET":
                return ok_response(self.as_bot_sees(message))
            if message["author"]["id"] != self.bot.id:
                return error_response(403, 50013, "Missing Permissions")
            return self._edit_or_delete(message, method, call)
        self.problems.append(f"unexpected request {method} {call.path}")
        return error_response(404, 0, "404: Not Found")

    def _interaction(self, token: str, *, ack: bool = False) -> FakeInteraction:
        it = self.interactions.get(token)
        if it is None:
            raise Refused(error_response(404, 10062 if ack else 10015, "Unknown interaction"))
        if it.expired:
            raise Refused(error_response(401, 50027, "Invalid Webhook Token"))
        return it

    def _commands(self, parts: list[str], method: str, call: Call) -> web.Response:
        scope = parts[3] if len(parts) == 5 else "global"
        if method == "GET":
            return ok_response(self.commands.get(scope, []))
        saved = []
        for command in call.json or []:
            problem = command_problem(command)
            if problem:
                self.problems.append(f"command {command.get('name')!r}: {problem}")
                return error_response(400, 50035, "Invalid Form Body", errors=problem)
            saved.append(
                {
                    **command,
                    "id": self.snowflake(),
                    "application_id": self.app_id,
                    "version": "1",
                    "description": command.get("description", ""),
                    "type": command.get("type", 1),
                }
            )
        self.commands[scope] = saved
        return ok_response(saved)

    def _callback(self, it: FakeInteraction, call: Call) -> web.Response:
        late = asyncio.get_running_loop().time() - it.created > ACK_DEADLINE_S
        if late:
            self.problems.append(f"interaction {it.id} answered after {ACK_DEADLINE_S:.0f} s")
            return error_response(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            self.problems.append(f"interaction {it.id} answered twice")
            return error_response(400, 40060, "Interaction has already been acknowledged.")
        body = call.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}[it.type]
        if kind not in allowed:
            self.problems.append(f"callback type {kind} is invalid for interaction type {it.type}")
            return error_response(400, 50035, "Invalid Form Body")
        message = None
        if kind in (4, 5):
            flags = (data.get("flags", 0) & EPHEMERAL) | (LOADING if kind == 5 else 0)
            message = self._message(
                self.bot.payload(), type=20, flags=flags, _token=it.token, webhook_id=self.app_id
            )
            if kind == 4:
                self._apply(message, data, call.files, creating=True)
            self.messages[message["id"]] = message
            it.original_id = message["id"]
        elif kind in (6, 7):
            target = it.payload.get("message")
            if target is None:
                self.problems.append("update callback for an interaction without a message")
                return error_response(400, 50035, "Invalid Form Body")
            message = self.messages[target["id"]]
            it.original_id = message["id"]
            if kind == 7:
                self._apply(message, data, call.files, creating=False)
        elif kind == 8 and len(data.get("choices", [])) > 25:
            self.problems.append("more than 25 autocomplete choices")
        elif kind == 9 and (problem := modal_problem(data)):
            self.problems.append(f"modal: {problem}")
            return error_response(400, 50035, "Invalid Form Body", errors=problem)
        it.callback_type, it.callback_data = kind, data
        answer: dict[str, Any] = {
            "interaction": {
                "id": it.id,
                "type": it.type,
                "response_message_id": it.original_id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message["flags"] & EPHEMERAL),
            }
        }
        answer["resource"] = {"type": kind}
        if message is not None:
            answer["resource"]["message"] = self.public(message)
        return ok_response(answer)

    def _followup(self, it: FakeInteraction, call: Call) -> web.Response:
        if it.callback_type is None:
            self.problems.append("followup sent before the interaction was acknowledged")
            return error_response(404, 10015, "Unknown Webhook")
        original = self.messages.get(it.original_id or "")
        if original is not None and original["flags"] & LOADING:
            # Discord's rule: the first followup after a defer replaces the "thinking" message and
            # keeps the defer's visibility, whatever flags it asks for.
            self._apply(original, call.json or {}, call.files, creating=False)
            original["flags"] &= ~LOADING  # the next followup is a message of its own
            return ok_response(self.public(original))
        flags = (call.json or {}).get("flags", 0) & EPHEMERAL
        message = self._message(
            self.bot.payload(), flags=flags, _token=it.token, webhook_id=self.app_id
        )
        self._apply(message, call.json or {}, call.files, creating=True)
        self.messages[message["id"]] = message
        return ok_response(self.public(message))

    def _channel_post(self, call: Call) -> web.Response:
        body = call.json or {}
        fields: dict[str, Any] = {}
        reference = body.get("message_reference")
        if reference is not None:
            target = self.messages.get(str(reference.get("message_id")))
            if target is None and reference.get("fail_if_not_exists", True):
                return error_response(400, 50035, "Invalid Form Body: Unknown message")
            if target is not None:
                fields = {
                    "type": 19,
                    "referenced_message": self.public(target),
                    "message_reference": {
                        "message_id": target["id"],
                        "channel_id": self.channel_id,
                    },
                }
        message = self._message(self.bot.payload(), **fields)
        self._apply(message, body, call.files, creating=True)
        self.messages[message["id"]] = message
        return ok_response(self.public(message))

    def _edit_or_delete(self, message: dict[str, Any], method: str, call: Call) -> web.Response:
        if method == "GET":
            return ok_response(self.public(message))
        if method == "DELETE":
            del self.messages[message["id"]]
            self.deleted.append(message)
            return web.Response(status=204)
        self._apply(message, call.json or {}, call.files, creating=False)
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = iso(time.time())
        return ok_response(self.public(message))

    def _apply(
        self,
        message: dict[str, Any],
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        creating: bool,
    ) -> None:
        """Check a create/edit payload like Discord does, then apply it to ``message``."""
        problem = payload_problem(body, files)
        if not problem and sum(len(f.data) for f in files) > self.attachment_size_limit:
            raise Refused(error_response(413, 40005, "Request entity too large"))
        if problem:
            self.problems.append(problem)
            raise Refused(error_response(400, 50035, "Invalid Form Body", errors=problem))
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        uploads = {f.field: f for f in files}
        kept = {a["id"]: a for a in message["attachments"]}
        if "attachments" in body or files:
            wanted = body.get("attachments")
            if wanted is None:
                wanted = [{"id": i} for i in range(len(files))]
                if not creating:
                    wanted = [{"id": a} for a in kept] + wanted
            new = []
            for entry in wanted:
                if str(entry["id"]) in kept:
                    new.append(kept[str(entry["id"])])
                elif (upload := uploads.get(f"files[{entry['id']}]")) is not None:
                    new.append(self.upload(upload.data, upload.filename, sniff_type(upload)))
                else:
                    self.problems.append(f"attachment {entry} is neither kept nor uploaded")
            message["attachments"] = new
        if creating and not (
            message["content"]
            or message["embeds"]
            or message["attachments"]
            or message["components"]
        ):
            self.problems.append("empty message")
            raise Refused(error_response(400, 50006, "Cannot send an empty message"))
