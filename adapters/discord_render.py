"""What Discord users see: progress lines, the result embed and plain-words error messages."""

from __future__ import annotations

import math

import discord

from bot.errors import BudgetExceeded, LimitExceeded, UserFacingError
from bot.models import JobResult

EMBED_COLOUR = discord.Colour(0x5865F2)
PROMPT_IN_EMBED = 300
PROMPT_IN_STATUS = 150
REQUESTED_BY = "Requested by"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters on a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut + "…"


def quote(prompt: str) -> str:
    """The prompt as a one-line Discord quote (mentions and markdown cannot fire from it)."""
    return "> " + discord.utils.escape_mentions(
        discord.utils.escape_markdown(shorten(prompt, PROMPT_IN_STATUS))
    )


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def status_queued(prompt: str, position: int) -> str:
    """The line shown while the job waits for a provider slot."""
    where = "next in line" if position <= 1 else f"{ordinal(position)} in line"
    return f"{quote(prompt)}\n⏳ Queued — {where}."


def status_working(prompt: str) -> str:
    """Shown right after the request is acknowledged, before the queue answers."""
    return f"{quote(prompt)}\n⏳ Getting your request ready…"


def status_generating(prompt: str, started_at: float, previews: int) -> str:
    """The line shown while the image is being made.

    Discord's relative timestamp ticks by itself in every client ("started 12 seconds ago"); a
    counter written by the bot would only change when the message is edited, so there is none.
    """
    preview = f" Preview {previews} below." if previews else ""
    return f"{quote(prompt)}\n🎨 Generating… started <t:{math.floor(started_at)}:R>.{preview}"


def posting(mention: str | None) -> str:
    """Shown for a moment while a result is put into a message posted afresh."""
    return " ".join(filter(None, (mention, "📤 Posting your result…")))


def still_making() -> str:
    """For a reply to a job's message while the job is still running."""
    return "⏳ That one isn't finished yet. Reply to it again once the image is there."


def result_embed(result: JobResult, requester: str) -> discord.Embed:
    """The embed under a finished result: prompt, size, quality, time, cost, job, who asked."""
    request = result.request
    title = "Edited image" if request.is_edit else "Generated image"
    if request.options.n > 1 or len(result.images) > 1:
        title += "s"
    embed = discord.Embed(
        title=title,
        description=discord.utils.escape_markdown(shorten(request.prompt, PROMPT_IN_EMBED)),
        colour=EMBED_COLOUR,
    )
    embed.add_field(name="Size", value=result.size or request.options.size)
    embed.add_field(name="Quality", value=result.quality or request.options.quality)
    embed.add_field(name="Time", value=f"{result.elapsed_s:.1f} s")
    embed.add_field(name="Cost", value=f"${result.cost_usd:.3f}")
    embed.add_field(name="Job", value=f"`{result.job_id}`")
    embed.add_field(name=REQUESTED_BY, value=requester)
    return embed


def error_message(error: UserFacingError) -> str:
    """The user's message for a refusal, with a live Discord timestamp for limits."""
    text = "⚠️ " + error.user_message
    if isinstance(error, LimitExceeded | BudgetExceeded):
        text += f" Your limit resets <t:{math.ceil(error.resets_at)}:R>."
    return text


def generic_error(job_id: str | None) -> str:
    """What the user sees for a bug: short, with the job id the operator can look up."""
    where = f" (job `{job_id}`)" if job_id else ""
    return f"⚠️ Something went wrong on the bot's side{where}. It has been logged; please try again."


def unshown(job_id: str, *, lost_access: bool) -> str:
    """For a result that was made (and charged) but could not be shown where it was asked for."""
    if lost_access:
        return (
            f"⚠️ Your image was made (job `{job_id}`), but I couldn't show it here. "
            "Check that I can still post in this channel, then try again."
        )
    return (
        f"⚠️ Your image was made and saved (job `{job_id}`), but Discord refused the message "
        "that shows it. This is a fault on the bot's side and has been logged; asking again "
        "would be charged again, so please tell the bot's operator."
    )


def interrupted_message(prompt: str) -> str:
    """Shown on a job's message when a restart cut it short."""
    return (
        f"{quote(prompt)}\n⚠️ This request was interrupted because the bot was restarted. "
        "Nothing was charged; please try again."
    )
