"""How the core's words look on Discord: Markdown, live timestamps, the job's lines, the embed."""

from __future__ import annotations

from typing import Any

import discord

from bot import texts
from bot.models import JobResult
from bot.presenting import JobView

EMBED_COLOUR = discord.Colour(0x5865F2)
PROMPT_IN_EMBED = 300
PROMPT_IN_STATUS = 150
REQUESTED_BY = "Requested by"
ENHANCED_FROM = "✨ Enhanced from"
# Discord's embed limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits):
# description 4096 characters, a field's value 1024, all of an embed's text 6000.
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELD_MAX = 1024
EMBED_TOTAL_MAX = 6000
NOTHING_SENT = "Nothing was sent, and the reworded prompt was not used."
ALREADY_SENT = "That reworded prompt was already sent; look for it in the channel."
SUGGESTION_HEADER = (
    "✨ Here is a reworded prompt. Nothing is sent until you press **Send it** "
    "(it is made like a new request)."
)

# A button's custom_id is "imagine:<key>:<job id>": the job lives in it, so a button works after a
# restart, and the keys must stay stable or old buttons stop working. (label, emoji, style)
ButtonLook = tuple[str, str, discord.ButtonStyle]
RESULT_BUTTONS: dict[str, ButtonLook] = {
    "regen": ("Regenerate", "🔁", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🔀", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}
# Under a result only while prompt help is on; with the four above it fills a row (5 at most).
ENHANCE_BUTTON: dict[str, ButtonLook] = {
    "enhance": ("Enhance & retry", "✨", discord.ButtonStyle.secondary),
}
PROGRESS_BUTTONS: dict[str, ButtonLook] = {
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),
}
# On the private refusal after a safety block, while prompt help is on.
REPHRASE_BUTTON: dict[str, ButtonLook] = {
    "rephrase": ("Rephrase and retry", "✨", discord.ButtonStyle.primary),
}
BUTTONS = {**RESULT_BUTTONS, **ENHANCE_BUTTON, **PROGRESS_BUTTONS, **REPHRASE_BUTTON}
# "imagine:<send|drop>:<blocked job id>:<suggestion id>": both ids are 16 characters, well
# inside Discord's 100 for a custom_id.
SUGGESTION_BUTTONS: dict[str, ButtonLook] = {
    "send": ("Send it", "✅", discord.ButtonStyle.success),
    "drop": ("Never mind", "✖️", discord.ButtonStyle.secondary),
}


class DiscordMarkup:
    """``bot.texts.Markup`` for Discord: backticks, ``<t:N:R>`` timestamps, ``<@id>`` mentions."""

    invite_hint = "Check that I can still post in this channel, then try again."

    def code(self, text: str) -> str:
        """Inline code."""
        return f"`{text}`"

    def relative(self, epoch: float) -> str:
        """Each client shows (and keeps ticking) "in 5 minutes" / "12 seconds ago"."""
        return f"<t:{round(epoch)}:R>"

    def clock(self, epoch: float) -> str:
        """A time of day in each reader's own time zone."""
        return f"<t:{round(epoch)}:T>"

    def mention(self, user_id: str) -> str:
        """The user, mentioned."""
        return f"<@{user_id}>"

    def channel(self, channel_id: str) -> str:
        """``<#id>``: a link to the channel."""
        return f"<#{channel_id}>"

    def bold(self, text: str) -> str:
        """Markdown bold."""
        return f"**{text}**"

    def link(self, url: str, label: str) -> str:
        """A masked link (Discord shows the label)."""
        return f"[{label}]({url})"

    def escape(self, text: str) -> str:
        """Markdown and mentions in a user's words stay literal."""
        return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


MARKUP = DiscordMarkup()


def warning(text: str) -> str:
    """A sentence that tells the user something went wrong."""
    return f"⚠️ {text}"


def sentence(text: str) -> str:
    """The core's state words as the start of a line."""
    return text[:1].upper() + text[1:]


def quote(prompt: str) -> str:
    """The prompt as a one-line Discord quote (mentions and markdown cannot fire from it)."""
    return "> " + discord.utils.escape_mentions(
        discord.utils.escape_markdown(texts.shorten(prompt, PROMPT_IN_STATUS))
    )


def status(view: JobView) -> str:
    """The job's message while it waits and runs.

    Discord's timestamps tick by themselves in every client; a counter written by the bot would
    only change when the message is edited, so there is none.
    """
    if view.phase == "running" and view.started_at is not None:
        line = "🎨 " + sentence(texts.working(view.started_at, view.previews, MARKUP))
    elif view.phase == "queued":
        line = "⏳ " + sentence(texts.queued(view.position))
    else:
        line = "⏳ " + sentence(texts.PREPARING)
    return f"{quote(view.prompt)}\n{line}"


def job_button(action: str, job_id: str) -> discord.ui.Button[discord.ui.View]:
    """The button ``action`` (a key of BUTTONS) for a job."""
    label, emoji, style = BUTTONS[action]
    return discord.ui.Button(
        label=label, emoji=emoji, style=style, custom_id=f"imagine:{action}:{job_id}"
    )


def suggestion_button(action: str, job_id: str, suggestion_id: str) -> discord.ui.Button[Any]:
    """ "Send it" or "Never mind" (a key of SUGGESTION_BUTTONS) under a reworded prompt."""
    label, emoji, style = SUGGESTION_BUTTONS[action]
    custom_id = f"imagine:{action}:{job_id}:{suggestion_id}"
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id)


def stopped_view(*buttons: discord.ui.Item[discord.ui.View]) -> discord.ui.View:
    """A view of ``buttons`` that is sent but not kept in memory: dynamic items answer them."""
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    view.stop()
    return view


def progress_view(job_id: str) -> discord.ui.View:
    """The buttons on a job's message while it waits or is being made."""
    return stopped_view(*(job_button(action, job_id) for action in PROGRESS_BUTTONS))


def rephrase_view(job_id: str) -> discord.ui.View:
    """ "Rephrase and retry" for a job a safety system blocked."""
    return stopped_view(*(job_button(action, job_id) for action in REPHRASE_BUTTON))


def suggestion_view(job_id: str, suggestion_id: str) -> discord.ui.View:
    """ "Send it" and "Never mind" under a reworded prompt."""
    return stopped_view(
        *(suggestion_button(action, job_id, suggestion_id) for action in SUGGESTION_BUTTONS)
    )


def escaped(text: str, limit: int) -> str:
    """A user's words, shortened to fit in ``limit`` characters once escaped (which adds some)."""
    cut = limit
    while True:
        shown = MARKUP.escape(texts.shorten(text, cut))
        if len(shown) <= limit or cut <= 1:
            return shown[:limit]
        cut = max(1, cut - (len(shown) - limit))


def suggestion_embed(prompt: str) -> discord.Embed:
    """The reworded prompt, shown privately to its requester to confirm or drop."""
    return discord.Embed(description=escaped(prompt, EMBED_DESCRIPTION_MAX), colour=EMBED_COLOUR)


def ended(prompt: str, state: str) -> str:
    """Shown on a job's message when it ended without an image (cancelled, for one)."""
    return f"{quote(prompt)}\n🚫 {sentence(state)}"


def interrupted(prompt: str) -> str:
    """Shown on a job's message when a restart cut it short."""
    return f"{quote(prompt)}\n{warning(texts.interrupted())}"


def result_embed(result: JobResult) -> discord.Embed:
    """The embed under a finished result: prompt, size, quality, time, cost, job, who asked."""
    request = result.request
    title = "Edited image" if request.is_edit else "Generated image"
    if request.options.n > 1 or len(result.images) > 1:
        title += "s"
    embed = discord.Embed(title=title, colour=EMBED_COLOUR)
    original = result.original_prompt
    if original is not None:
        # What the user wrote, under the rewrite that was made.
        embed.add_field(name=ENHANCED_FROM, value=escaped(original, EMBED_FIELD_MAX), inline=False)
    embed.add_field(name="Size", value=result.size or request.options.size)
    embed.add_field(name="Quality", value=result.quality or request.options.quality)
    embed.add_field(name="Time", value=f"{result.elapsed_s:.1f} s")
    embed.add_field(name="Cost", value=f"${result.cost_usd:.3f}")
    embed.add_field(name="Job", value=MARKUP.code(result.job_id))
    embed.add_field(name=REQUESTED_BY, value=MARKUP.mention(request.requester.user_id))
    if original is None:
        embed.description = discord.utils.escape_markdown(
            texts.shorten(request.prompt, PROMPT_IN_EMBED)
        )
    else:
        # A rewrite is what was sent: show as much of it as the embed can hold.
        room = min(EMBED_DESCRIPTION_MAX, EMBED_TOTAL_MAX - len(embed))
        embed.description = escaped(request.prompt, room)
    return embed
