"""Every sentence the bot says to a user, in one place; each platform only formats it.

A ``Markup`` turns the few platform-specific pieces into the platform's syntax: a job id as
code, a time that each reader sees in their own time zone, a mention, how to let the bot into a
channel. Everything else is plain words, the same on Discord and Slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.errors import BudgetExceeded, LimitExceeded, UserFacingError, count_images


class Markup(Protocol):
    """How one platform writes the parts of a sentence that aren't plain words."""

    #: How to let the bot post in a channel it can't post in.
    invite_hint: str

    def code(self, text: str) -> str:
        """``text`` as inline code."""
        ...

    def relative(self, epoch: float) -> str:
        """A moment as the reader's client shows it ("in 5 minutes", "12 seconds ago")."""
        ...

    def clock(self, epoch: float) -> str:
        """A moment as a time of day in the reader's own time zone."""
        ...

    def mention(self, user_id: str) -> str:
        """The user, mentioned."""
        ...

    def channel(self, channel_id: str) -> str:
        """A link to the channel."""
        ...

    def bold(self, text: str) -> str:
        """``text`` in bold."""
        ...

    def link(self, url: str, label: str) -> str:
        """``label`` linking to ``url``."""
        ...

    def escape(self, text: str) -> str:
        """A user's own words (a prompt, a name), so they can't ping anyone or break markup."""
        ...


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters on a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut + "…"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _job(job_id: str | None, m: Markup) -> str:
    return f" (job {m.code(job_id)})" if job_id else ""


# --- a job's state, while it waits and runs ---------------------------------------------------
PREPARING = "getting your request ready…"
FINISHING = "finishing…"


def queued(position: int) -> str:
    """A place in line: 0 means a slot is free and the job starts now."""
    if position <= 0:
        return "starting…"
    return "queued — next in line" if position == 1 else f"queued — {ordinal(position)} in line"


def working(started_at: float, previews: int, m: Markup) -> str:
    """While the image is being made (the platform's clock keeps the time current)."""
    preview = f", preview {previews}" if previews else ""
    return f"working since {m.clock(started_at)} ({m.relative(started_at)}){preview}"


def done(elapsed_s: float) -> str:
    """The headline state of a finished job."""
    return f"done in {elapsed_s:.0f} s"


# --- how a job that made no image ended --------------------------------------------------------
NOT_MADE = "not made — nothing was charged"
UNAVAILABLE = (
    "not made — the image service is unavailable right now; nothing was charged, please try again"
)
INTERRUPTED = "interrupted because the bot restarted — nothing was charged; please try again"


NO_PROMPT_HELP = (
    "Prompt help is off on this bot (its operator can turn it on with IMAGINE_PROMPT_MODEL). "
    "Nothing was charged."
)
ONLY_OWNER_REPHRASES = "Only the person who asked for this image can rephrase it."
ONLY_OWNER_CANCELS = (
    "Only the person who asked for this image, or an admin, can cancel it. Nothing was changed."
)
VARIATION = "Make a new variation of this image: keep its subject and style, vary the details."


def variation(prompt: str) -> str:
    """The prompt of a Vary: the original's, with the instruction to vary it (once)."""
    prompt = prompt.removeprefix(VARIATION).strip()
    return f"{VARIATION}\n\n{prompt}" if prompt else VARIATION


def too_late_to_cancel(status: str) -> str:
    """Cancel was pressed on a job that can't be stopped any more."""
    if status in ("queued", "running"):
        return "It's already made, so it can't be cancelled; it will be posted in a moment."
    return "It has already finished, so there is nothing to cancel."


def cancelled(by_user_id: str, m: Markup) -> str:
    """A job's state once its requester or an admin cancelled it."""
    return f"cancelled by {m.mention(by_user_id)} — nothing was charged"


def interrupted() -> str:
    """Told to the requester when a restart cut their job short."""
    return (
        "This request was interrupted because the bot was restarted. "
        "Nothing was charged; please try again."
    )


def refusal(error: UserFacingError, m: Markup) -> str:
    """Why a request was refused or failed, and for limits when it can be tried again."""
    text = error.user_message
    if isinstance(error, LimitExceeded | BudgetExceeded):
        if error.whose is None:
            text += f" Your limit resets {m.relative(error.resets_at)}."
        else:
            text += f" It frees up {m.relative(error.resets_at)}."
    return text


def blocked(scope: str, team: str) -> str:
    """An admin turned image making off for this user, their tier, the channel or the team."""
    if scope == "channel":
        return "An admin has turned image making off in this channel. Try another channel."
    if scope == "team":
        return f"An admin has turned image making off in this {team}."
    whom = "for you" if scope == "user" else "for your role or group"
    return f"An admin has turned image making off {whom}. Ask an admin of this {team} about it."


ADMINS = {
    "discord": "members who can manage this server",
    "slack": "workspace admins and owners",
}


def admins_only(platform: str, to_do: str) -> str:
    """A non-admin asked for an admin command; nothing was changed."""
    who = ADMINS.get(platform, "the bot's admins")
    return f"Only {who} (or the bot's operator) can {to_do}. Nothing was changed."


def bug(job_id: str | None, m: Markup) -> str:
    """A failure with no explanation for the user (the details are in the log)."""
    return (
        f"Sorry, something went wrong on the bot's side{_job(job_id, m)}; it has been logged. "
        "Please try again, and tell the bot's operator if it keeps happening."
    )


def cant_post(reason: str, m: Markup) -> str:
    """The bot can't post where it was asked, so it stopped before the image was paid for."""
    return (
        f"I can't post in this channel ({reason}), so I didn't make the image and nothing was "
        f"charged. {m.invite_hint}"
    )


# --- a result that was made (and charged) but isn't where it should be -------------------------
def lost_access(job_id: str, reason: str, m: Markup) -> str:
    """The bot lost access to the channel while the job ran."""
    return (
        f"Your image was made{_job(job_id, m)}, but I can't post in this channel any more "
        f"({reason}). {m.invite_hint}"
    )


def upload_refused(job_id: str, platform: str, reason: str, m: Markup) -> str:
    """The platform wouldn't take the upload; the images are kept and the buttons still work."""
    return (
        f"Your image was made and saved{_job(job_id, m)}, but {platform} wouldn't take the "
        f"upload ({reason}). Use Regenerate or Edit on the message, or try again in a moment."
    )


def unfinished(job_id: str, platform: str, reason: str, m: Markup) -> str:
    """The images are posted, only the message around them could not be finished."""
    return (
        f"Your image is in the thread{_job(job_id, m)}, but {platform} wouldn't let me finish "
        f"its message ({reason}). Reply in the thread to edit it."
    )


def unshown(job_id: str, platform: str, m: Markup) -> str:
    """The platform refused the result for a reason that is the bot's fault."""
    return (
        f"Your image was made and saved{_job(job_id, m)}, but {platform} refused the message "
        "that shows it. This is a fault on the bot's side and has been logged; asking again "
        "would be charged again, so please tell the bot's operator."
    )


def result_details(
    *, size: str, quality: str, images: int, cost_usd: float, job_id: str, is_edit: bool
) -> str:
    """``edit · 1024x1024 · high quality · 1 image · $0.167 · job abc``."""
    parts = [size, f"{quality} quality", count_images(images), f"${cost_usd:.3f}", f"job {job_id}"]
    return " · ".join(["edit", *parts] if is_edit else parts)


# --- answers to messages and buttons ------------------------------------------------------------
NOT_HERE = "I'm not enabled in this channel."
NO_IMAGE = "That message has no image I can edit."
NO_PROMPT = "Tell me what to change: reply to the image with a description of the edit."
STILL_MAKING = "That one isn't finished yet. Reply to it again once the image is there."
IMAGE_GONE = "I can't see an image in it any more"
CANT_SEE = (
    "I can't see the images in that message: this bot runs without Discord's Message "
    "Content intent. Use the message's Apps → Edit image menu instead."
)


def only_owner_deletes(owner: str, who_else: str, m: Markup) -> str:
    """Someone else's image: who may delete it."""
    return f"Only {m.mention(owner)} or {who_else} can delete this image."


def too_many_files(count: int, most: int) -> str:
    """A message with more images than one edit takes."""
    return f"That message has {count} images; at most {most} can be edited together (and a mask)."


def editing(names: Sequence[str]) -> str:
    """``Editing photo.png, mask.png.``"""
    named = ", ".join(name or "image" for name in names) or "the images"
    return f"Editing {shorten(named, 300)}."
