"""The fake Slack Web API: strict about tokens, trigger ids, block shapes and upload lengths."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.fakes.slack_blockkit import blocks_problem, message_problem, view_problem
from tests.fakes.slack_workspace import (
    APP_ID,
    APP_TOKEN,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    TEAM_ID,
    SlackCall,
    SlackWorkspace,
    Upload,
)

# Slack docs, Rate limits (docs.slack.dev/apis/web-api/rate-limits): limits apply per method per
# app per workspace. Tier 1: 1+ per minute, Tier 2: 20+, Tier 3: 50+, Tier 4: 100+. The tier of
# each method is on its page (docs.slack.dev/reference/methods/<method>): chat.update, chat.delete,
# files.delete and conversations.join are Tier 3; files.getUploadURLExternal,
# files.completeUploadExternal, chat.postEphemeral, files.info, users.info and views.open are
# Tier 4; conversations.info is Tier 3; usergroups.list is Tier 2; apps.connections.open is
# Tier 1. Over the limit Slack answers HTTP 429 with Retry-After
# (seconds) and {"ok": false, "error": "ratelimited"}. The fake holds each tier to its floor.
_METHOD_TIERS = {
    "apps.connections.open": 1,
    "chat.update": 50,
    "chat.delete": 50,
    "files.delete": 50,
    "conversations.join": 50,
    "conversations.info": 50,
    "usergroups.list": 20,
    "files.getUploadURLExternal": 100,
    "files.completeUploadExternal": 100,
    "chat.postEphemeral": 100,
    "files.info": 100,
    "users.info": 100,
    "views.open": 100,
}
# chat.postMessage is "special": one message per second per channel, with short bursts (here:
# up to three within three seconds).
_POSTS_PER_CHANNEL = (3, 3.0)


class SlackWebApi(SlackWorkspace):
    """Answers ``/api/{method}`` the way Slack does for the methods the bot calls."""

    async def _web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        for key in ("blocks", "view", "files", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        args.pop("token", None)
        call = SlackCall(method, args, token)
        self.calls.append(call)
        wait = self._over_limit(method, args) if token == BOT_TOKEN else None
        try:
            if wait is not None:
                call.limited = True
                answer = _err("ratelimited")
            else:
                answer = self._answer(method, args, token)
        finally:
            await self._notify()
        if self.on_answered is not None:
            await self.on_answered(call, answer)
        if answer.get("error") == "ratelimited":
            return web.json_response(
                answer,
                status=429,
                headers={"Retry-After": self._retry_after(wait or self.failure_retry_after)},
            )
        return web.json_response(answer)

    # --- rate limits --------------------------------------------------------------------
    def _over_limit(self, method: str, args: dict[str, Any]) -> float | None:
        """Seconds until ``method`` may be called again, or None (and the call is counted)."""
        if not self.rate_limits:
            return None
        if method == "chat.postMessage":
            key, (limit, seconds) = (method, str(args.get("channel"))), _POSTS_PER_CHANNEL
        elif method in _METHOD_TIERS:
            key, limit, seconds = (method, TEAM_ID), _METHOD_TIERS[method], 60.0
        else:
            return None
        span = seconds * self.rate_scale
        now = time.monotonic()
        sent = self._rate_windows.setdefault(key, deque())
        while sent and sent[0] <= now - span:
            sent.popleft()
        if len(sent) >= limit:
            return sent[0] + span - now
        sent.append(now)
        return None

    def _retry_after(self, seconds: float) -> str:
        # Slack sends whole seconds; a scaled clock sends the scaled wait, still in seconds.
        if self.rate_scale >= 1:
            return str(math.ceil(seconds))
        return f"{max(seconds, 0.0):.3f}"

    # --- Web API methods ----------------------------------------------------------------
    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return _err("not_allowed_token_type" if token else "not_authed")
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        if token != BOT_TOKEN:
            return _err("invalid_auth" if token else "not_authed")
        if self.failures.get(method):
            return _err(self.failures[method].pop(0))
        for rule in self.failures_when:
            if rule[0] == method and rule[1](args):
                self.failures_when.remove(rule)
                return _err(rule[2])
        channel = args.get("channel") or args.get("channel_id")
        if channel in self.outside and method != "conversations.join":
            return _err("not_in_channel")
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return _err("unknown_method")
        result: dict[str, Any] = handler(args)
        return result

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "imagine",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _m_conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel.startswith(("G", "D")):
            return _err("method_not_supported_for_channel_type")
        self.outside.discard(channel)
        return {"ok": True, "channel": {"id": channel, "is_member": True}}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        return {"ok": True, "user": user} if user else _err("user_not_found")

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self.channels.get(str(args.get("channel")))
        return {"ok": True, "channel": dict(found)} if found else _err("channel_not_found")

    def _m_usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        # methods/usergroups.list: "include_users: Include the list of users for each User
        # group"; disabled groups (date_delete set) only with include_disabled.
        with_users = str(args.get("include_users", "")).lower() in ("1", "true")
        disabled = str(args.get("include_disabled", "")).lower() in ("1", "true")
        groups = []
        for group in self.usergroups.values():
            if group.get("date_delete") and not disabled:
                continue
            shown = dict(group)
            if not with_users:
                shown.pop("users", None)
            groups.append(shown)
        return {"ok": True, "usergroups": groups}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        problem = self._check_content(args)
        if not channel:
            return _err("channel_not_found")
        if problem:
            return _err(problem)
        thread_ts = args.get("thread_ts")
        if thread_ts and self.message(channel, str(thread_ts)) is None:
            return _err("thread_not_found")
        msg: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": args.get("text", ""),
            "ts": self._new_ts(),
        }
        if args.get("blocks"):
            msg["blocks"] = args["blocks"]
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
        self.messages.setdefault(channel, []).append(msg)
        return {"ok": True, "channel": channel, "ts": msg["ts"], "message": dict(msg)}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        msg = self.message(channel, ts)
        if msg is None:
            return _err("message_not_found")
        problem = self._check_content(args)
        if problem:
            return _err(problem)
        msg["text"] = args.get("text", "")
        if "blocks" in args:
            msg["blocks"] = args["blocks"]
        return {"ok": True, "channel": channel, "ts": ts, "text": msg["text"], "message": dict(msg)}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return _err("channel_not_found")
        if not args.get("user"):
            return _err("user_not_found")
        problem = self._check_content(args)
        if problem:
            return _err(problem)
        shown = {
            "channel": str(args["channel"]),
            "user": str(args["user"]),
            "text": args.get("text", ""),
            "blocks": args.get("blocks") or [],
            "ts": self._new_ts(),
            "thread_ts": args.get("thread_ts"),
        }
        self.ephemerals.append(shown)
        return {"ok": True, "message_ts": shown["ts"]}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        msg = self.message(channel, ts)
        if msg is None:
            return _err("message_not_found")
        if msg.get("user") != BOT_USER_ID:
            return _err("cant_delete_message")
        self.messages[channel].remove(msg)
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.message(str(args.get("channel")), str(args.get("timestamp"))) is None:
            return _err("message_not_found")
        return {"ok": True} if args.get("name") else _err("invalid_name")

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = args.get("trigger_id")
        if trigger not in self._triggers:
            return _err("invalid_trigger_id")
        self._triggers.discard(trigger)
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return _err("invalid_arguments")
        if view_problem(view, self._image_ok) is not None:
            return _err("invalid_arguments")
        opened = {**view, "id": f"V{next(self._ids):08d}", "team_id": TEAM_ID, "app_id": APP_ID}
        return {"ok": True, "view": opened}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename, length = args.get("filename"), str(args.get("length", ""))
        if not filename or not length.isdigit() or int(length) <= 0:
            return _err("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.uploads[file_id] = Upload(file_id, str(filename), int(length))
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = args.get("files")
        if not isinstance(entries, list) or not entries:
            return _err("invalid_arguments")
        channel, thread_ts = args.get("channel_id"), args.get("thread_ts")
        if thread_ts and (not channel or self.message(str(channel), str(thread_ts)) is None):
            return _err("invalid_thread_ts")
        done: list[dict[str, Any]] = []
        for entry in entries:
            upload = self.uploads.get(str(entry.get("id")))
            if upload is None or len(upload.data) != upload.length or upload.completed:
                return _err("file_not_found")
            upload.completed, upload.title = True, entry.get("title")
            upload.channel_id, upload.thread_ts = channel, thread_ts
            url = f"{self.base_url}/files-pri/{upload.file_id}/{upload.filename}"
            mime = "image/" + upload.filename.rsplit(".", 1)[-1].replace("jpg", "jpeg")
            obj = {
                "id": upload.file_id,
                "name": upload.filename,
                "title": upload.title,
                "mimetype": mime,
                "size": upload.length,
                "user": BOT_USER_ID,
                "url_private": url,
                "url_private_download": url,
            }
            self.files[upload.file_id] = obj
            self.file_bytes[upload.file_id] = (upload.data, mime)
            done.append(obj)
        if channel:
            msg: dict[str, Any] = {
                "type": "message",
                "subtype": "file_share",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "text": args.get("initial_comment") or "",
                "ts": self._new_ts(),
                "files": done,
            }
            if thread_ts:
                msg["thread_ts"] = str(thread_ts)
            self.messages.setdefault(str(channel), []).append(msg)
        return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in done]}

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self.files.get(str(args.get("file")))
        return {"ok": True, "file": obj} if obj else _err("file_not_found")

    def _m_files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = str(args.get("file"))
        if self.files.pop(file_id, None) is None:
            return _err("file_not_found")
        self.file_bytes.pop(file_id, None)
        return {"ok": True}

    # --- validation (the rules live in slack_blockkit) ---------------------------------
    def _check_content(self, args: dict[str, Any]) -> str | None:
        return message_problem(args, self._image_ok)

    def _bad_blocks(self, blocks: Any) -> bool:
        return blocks_problem(blocks, self._image_ok) is not None

    def _image_ok(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """The file a ``slack_file`` reference names, if this workspace can show it."""
        if self.refuse_slack_file_blocks:
            return None
        found = self.files.get(str(ref.get("id")))
        if found is None and ref.get("url") is not None:
            found = next((f for f in self.files.values() if f["url_private"] == ref["url"]), None)
        return found


def _err(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}
