"""What Slack sends the bot: slash commands, event callbacks and interactive payloads."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.fakes.slack_workspace import APP_ID, BOT_USER_ID, TEAM_ID, SlackWorkspace


class SlackPayloads(SlackWorkspace):
    """Builds the payloads real Slack would deliver for what people do."""

    def message_event(
        self, channel: str, msg: dict[str, Any], *, kind: str = "message"
    ) -> dict[str, Any]:
        """The Events API callback Slack sends for ``msg`` (``kind`` message or app_mention)."""
        event: dict[str, Any] = {
            "type": kind,
            "channel": channel,
            "user": msg["user"],
            "text": msg["text"],
            "ts": msg["ts"],
            "team": TEAM_ID,
        }
        if kind == "message":
            event["channel_type"] = "im" if channel.startswith("D") else "channel"
            if msg.get("files"):
                event["subtype"] = "file_share"
        for key in ("thread_ts", "files", "bot_id"):
            if msg.get(key):
                event[key] = msg[key]
        return self.event_payload(event)

    def command_payload(
        self,
        text: str,
        *,
        user: str = "UALICE",
        channel: str = "C0GENERAL",
        command: str = "/imagine",
    ) -> dict[str, str]:
        """The fields of a slash command request."""
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
            "trigger_id": self.new_trigger(),
        }

    def event_payload(
        self, event: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """Wrap an event in its ``event_callback`` envelope."""
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {"event_ts": event.get("ts", self._new_ts()), **event},
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                    "enterprise_id": None,
                }
            ],
        }

    def user_ref(self, user: str) -> dict[str, str]:
        """The ``user`` object interactive payloads carry."""
        name = self.users.get(user, {}).get("name", user)
        return {"id": user, "username": name, "name": name, "team_id": TEAM_ID}

    def block_action_payload(
        self, user: str, channel: str, message: dict[str, Any], action_id: str, value: str
    ) -> dict[str, Any]:
        """A ``block_actions`` payload for a button click on ``message``.

        A message with blocks must carry that button (action_id and value): Slack can only send
        a click on a button people see. A message without blocks stands for an old message the
        bot no longer knows.
        """
        block_id, label = "imagine_actions", action_id
        if message.get("blocks"):
            block_id, label = _button_on(message, action_id, value)
        return {
            "type": "block_actions",
            "user": self.user_ref(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self.new_trigger(),
            "team": {"id": TEAM_ID, "domain": "test"},
            "channel": {"id": channel, "name": "general"},
            "message": message,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": label},
                    "value": value,
                    "action_ts": self._new_ts(),
                }
            ],
        }

    def ephemeral_action_payload(
        self, shown: dict[str, Any], action_id: str, value: str
    ) -> dict[str, Any]:
        """A ``block_actions`` payload for a click on the private message ``shown``.

        Only its user sees it, so only they can click; Slack sends no ``message`` for it, and
        its response URL replaces or deletes it.
        """
        if shown not in self.ephemerals:
            raise ValueError("that private message is no longer shown")
        block_id, label = _button_on(shown, action_id, value)
        rid = uuid.uuid4().hex[:8]
        self.response_targets[rid] = shown
        container = {
            "type": "message",
            "message_ts": shown["ts"],
            "channel_id": shown["channel"],
            "is_ephemeral": True,
        }
        return {
            "type": "block_actions",
            "user": self.user_ref(shown["user"]),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": self.new_trigger(),
            "team": {"id": TEAM_ID, "domain": "test"},
            "channel": {"id": shown["channel"], "name": "general"},
            "response_url": f"{self.base_url}/response/{rid}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": label},
                    "value": value,
                    "action_ts": self._new_ts(),
                }
            ],
        }

    def shortcut_payload(
        self, user: str, channel: str, message: dict[str, Any], callback_id: str = "imagine_edit"
    ) -> dict[str, Any]:
        """A ``message_action`` payload (the message shortcut)."""
        return {
            "type": "message_action",
            "token": "legacy-verification-token",
            "action_ts": self._new_ts(),
            "team": {"id": TEAM_ID, "domain": "test"},
            "user": self.user_ref(user),
            "channel": {"id": channel, "name": "general"},
            "callback_id": callback_id,
            "trigger_id": self.new_trigger(),
            "message_ts": message["ts"],
            "message": message,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
        }

    def view_submission_payload(
        self, user: str, view: dict[str, Any], values: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """A ``view_submission`` for a modal the bot opened, with ``values`` typed in."""
        _check_typed(view, values)
        submitted = {
            **view,
            "id": view.get("id", "V0"),
            "state": {"values": values},
            "team_id": TEAM_ID,
            "app_id": APP_ID,
        }
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "test"},
            "user": self.user_ref(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": self.new_trigger(),
            "view": submitted,
        }


# Slack docs (plain_text_input): a user who types more than max_length "will receive an error"
# and can't submit; with no max_length the field still stops at 3000.
_INPUT_MOST = 3000


def _check_typed(view: dict[str, Any], values: dict[str, dict[str, Any]]) -> None:
    """Refuse, as Slack's client would, text longer than its input's ``max_length``."""
    for block in view.get("blocks") or []:
        element = block.get("element") or {}
        if block.get("type") != "input" or element.get("type") != "plain_text_input":
            continue
        typed = (values.get(block.get("block_id", "")) or {}).get(element.get("action_id", ""))
        value = str((typed or {}).get("value") or "")
        most = min(int(element.get("max_length", _INPUT_MOST)), _INPUT_MOST)
        if len(value) > most:
            raise ValueError(f"Slack won't submit {len(value)} characters here (max {most})")


def _button_on(message: dict[str, Any], action_id: str, value: str) -> tuple[str, str]:
    """The block id and label of the button ``action_id`` with ``value`` on ``message``."""
    for block in message.get("blocks") or []:
        if block.get("type") != "actions":
            continue
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id and element.get("value") == value:
                return str(block.get("block_id") or ""), str(element["text"]["text"])
    shown = [
        (e.get("action_id"), e.get("value"))
        for b in message.get("blocks") or []
        if b.get("type") == "actions"
        for e in b.get("elements") or []
    ]
    raise ValueError(f"no button {action_id}={value!r} on this message; it shows {shown}")
