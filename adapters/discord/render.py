"""How the core's words look on Discord: Markdown, live timestamps, the job's lines, the embed."""

from __future__ import annotations

import discord

from bot import texts
from bot.models import JobResult
from bot.presenting import JobView

EMBED_COLOUR = discord.Colour(0x5865F2)
PROMPT_IN_EMBED = 300
PROMPT_IN_STATUS = 150
REQUESTED_BY = "Requested by"

# A button's custom_id is "imagine:<key>:<job id>": the job lives in it, so a button works after a
# restart, and the keys must stay stable or old buttons stop working. (label, emoji, style)
ButtonLook = tuple[str, str, discord.ButtonStyle]
RESULT_BUTTONS: dict[str, ButtonLook] = {
    "regen": ("Regenerate", "🔁", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🔀", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}
PROGRESS_BUTTONS: dict[str, ButtonLook] = {
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),
}
BUTTONS = {**RESULT_BUTTONS, **PROGRESS_BUTTONS}


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


def progress_view(job_id: str) -> discord.ui.View:
    """The buttons on a job's message while it waits or is being made."""
    view = discord.ui.View(timeout=None)
    for action in PROGRESS_BUTTONS:
        view.add_item(job_button(action, job_id))
    # Stopped views are sent but not kept in memory: a dynamic item answers the clicks.
    view.stop()
    return view


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
    embed = discord.Embed(
        title=title,
        description=discord.utils.escape_markdown(texts.shorten(request.prompt, PROMPT_IN_EMBED)),
        colour=EMBED_COLOUR,
    )
    embed.add_field(name="Size", value=result.size or request.options.size)
    embed.add_field(name="Quality", value=result.quality or request.options.quality)
    embed.add_field(name="Time", value=f"{result.elapsed_s:.1f} s")
    embed.add_field(name="Cost", value=f"${result.cost_usd:.3f}")
    embed.add_field(name="Job", value=MARKUP.code(result.job_id))
    embed.add_field(name=REQUESTED_BY, value=MARKUP.mention(request.requester.user_id))
    return embed
