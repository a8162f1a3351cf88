"""The OAuth2 invite link for the bot, with exactly the scopes and permissions it needs."""

from __future__ import annotations

import base64
import binascii

import discord

# What the bot does in a channel, and nothing more (the invite asks for exactly this):
#   View Channel              1 << 10  see the channels it answers in
#   Send Messages             1 << 11  reply to messages (reply-to-edit), post restart notices
#   Embed Links               1 << 14  the result embed
#   Attach Files              1 << 15  the images and previews
#   Read Message History      1 << 16  fetch the message a reply points at
#   Send Messages in Threads  1 << 38  the same inside threads
# Manage Messages is not needed: the bot only ever deletes its own messages. Total 274878024704.
# Slash commands, buttons and modals need no permission: interactions answer through webhooks.
NEEDED = "view_channel send_messages embed_links attach_files read_message_history"
BOT_PERMISSIONS = discord.Permissions(
    **dict.fromkeys(f"{NEEDED} send_messages_in_threads".split(), True)
)
INVITE_SCOPES = ("bot", "applications.commands")


def discord_invite_url(application_id: str) -> str:
    """The OAuth2 URL that adds the bot to a server with exactly the permissions it needs."""
    return discord.utils.oauth_url(
        application_id, permissions=BOT_PERMISSIONS, scopes=INVITE_SCOPES
    )


def application_id_from_token(token: str) -> str | None:
    """The bot's user (= application) id from its token's first segment, or None."""
    first = token.strip().removeprefix("Bot ").split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.isdigit() else None
