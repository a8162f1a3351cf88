"""The one exception tree of imagine-bot.

    ImagineError
    ├── UserFacingError              message is safe to show a user as is
    │   ├── InvalidRequest           a bad option, prompt or size (``param`` names it)
    │   │   └── InvalidSize          a custom WxH size that breaks a rule
    │   ├── AttachmentRejected       an input image or mask was refused (``filename``, ``reason``)
    │   ├── LimitExceeded            image limit used up (``retry_after``, ``resets_at``)
    │   ├── BudgetExceeded           dollar budget used up (``retry_after``, ``resets_at``)
    │   ├── Blocked                  an admin turned image making off here (``scope``)
    │   ├── QueueFull                the requester has as many jobs waiting as one may
    │   ├── NeverFits                bigger than a whole limit or budget: waiting can't help
    │   │   ├── TooManyImages        more images than a limit allows (``limit``, ``requested``)
    │   │   ├── OverBudget           estimate above a budget (``estimate_usd``, ``alternatives``)
    │   │   └── BudgetTooSmall       even the cheapest image is above a budget (``cheapest_usd``)
    │   ├── ContentBlocked           the safety system refused (``categories``)
    │   ├── QuotaExhausted           the operator's OpenAI account is out of credit
    │   ├── ProviderUnavailable      the image service failed after retries (``retry_after``)
    │   ├── ProviderMisconfigured    a bad key / missing permission: the operator must act
    │   ├── JobNotFound              a button or reply points at a job the store does not know
    │   │   └── ImagePruned          its images were removed by retention (``kept_days``)
    │   ├── NotAllowed               the user may not do this (delete someone else's image)
    │   ├── JobCancelled             its requester or an admin cancelled it (``by``)
    │   └── InternalError            an unexpected failure, already logged with ``job_id``
    └── ConfigError                  a setting is missing or invalid (``variable``)

Anything else that escapes is a bug: log it with the job id and show a generic message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


class ImagineError(Exception):
    """Base of every error imagine-bot raises on purpose."""


class UserFacingError(ImagineError):
    """An error whose message can be shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message


class InvalidRequest(UserFacingError):
    """The request has an option, prompt or size the API would refuse."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidSize(InvalidRequest):
    """A custom ``WxH`` size breaks one of gpt-image-2's rules."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="size")


class AttachmentRejected(UserFacingError):
    """An input image or mask cannot be used."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"Can't use {filename}: {reason}")
        self.filename = filename
        self.reason = reason


class _WindowExceeded(UserFacingError):
    """Shared shape of the limit and budget refusals."""

    def __init__(self, message: str, *, retry_after: float, now: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
        self.resets_at = (time.time() if now is None else now) + self.retry_after


class LimitExceeded(_WindowExceeded):
    """The requester has used up an image limit; ``resets_at`` is a Unix time.

    ``whose`` names a shared scope ("this channel's", "the bot's"); None is the requester's own.
    """

    def __init__(
        self,
        *,
        limit: int,
        window_label: str,
        used: int,
        requested: int,
        retry_after: float,
        now: float | None = None,
        whose: str | None = None,
        scope: str = "user",
    ) -> None:
        self.limit = limit
        self.window_label = window_label
        self.used = used
        self.requested = requested
        self.whose = whose
        self.scope = scope
        left = max(0, limit - used)
        wait = format_duration(retry_after)
        allowance = f"{count_images(limit)} per {window_label}"
        if whose is not None:
            rule = f"{whose} {every(window_label)} limit of {count_images(limit)}"
            made = f"{used} made or in progress"
            message = (
                f"{_capital(rule)} is used up ({made})."
                if left == 0
                else f"{_capital(rule)} has {left} left ({made}) and you asked for {requested}."
            )
            if left:
                message += f" Ask for {_at_most(left)} now, or try again in {wait}."
            else:
                message += f" Try again in {wait}."
        elif left == 0:
            message = f"You've reached your limit of {allowance}. Try again in {wait}"
            message += "." if requested == 1 else f", when there is room for {_all(requested)}."
        else:
            message = (
                f"You have {left} of your {allowance} left and asked for {requested}. "
                f"Ask for {_at_most(left)} now, or try again in {wait} for {_all(requested)}."
            )
        super().__init__(message, retry_after=retry_after, now=now)


class BudgetExceeded(_WindowExceeded):
    """The requester (or a shared scope: ``whose``) has spent a dollar budget for a window."""

    def __init__(
        self,
        *,
        budget_usd: float,
        window_label: str,
        spent_usd: float,
        retry_after: float,
        now: float | None = None,
        requested_usd: float | None = None,
        whose: str | None = None,
        scope: str = "user",
    ) -> None:
        self.budget_usd = budget_usd
        self.window_label = window_label
        self.spent_usd = spent_usd
        self.requested_usd = requested_usd
        self.whose = whose
        self.scope = scope
        wait = format_duration(retry_after)
        if whose is not None:
            rule = f"{whose} {every(window_label)} budget of {format_usd(budget_usd)}"
            held = f"{format_usd(spent_usd)} spent or held for requests still running"
            if requested_usd is not None:
                held += f", and this request could cost up to {format_usd_up(requested_usd)}"
            message = f"{_capital(rule)} is spent ({held}). Try again in {wait}"
            message += ", or ask for something cheaper." if spent_usd < budget_usd else "."
            super().__init__(message, retry_after=retry_after, now=now)
            return
        budget = f"your budget of {format_usd(budget_usd)} per {window_label}"
        spent = f"{format_usd(spent_usd)} of {budget} is spent or held for requests still running"
        if requested_usd is None:
            message = f"You've used {budget} ({format_usd(spent_usd)} spent or reserved). "
        else:
            message = f"This request would cost up to {format_usd_up(requested_usd)}, and {spent}. "
        message += f"Try again in {wait}, or ask for something cheaper."
        super().__init__(message, retry_after=retry_after, now=now)


class Blocked(UserFacingError):
    """An admin turned image making off for this user, tier, channel or team (``scope``)."""

    def __init__(self, scope: str, message: str) -> None:
        super().__init__(message)
        self.scope = scope


class QueueFull(UserFacingError):
    """The requester already has as many jobs waiting in line as one person may."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        super().__init__(
            f"You already have {waiting} request{'s' if waiting != 1 else ''} waiting in line. "
            "Wait for one of them to start, then ask again. Nothing was charged."
        )


class NeverFits(UserFacingError):
    """The request is bigger than a whole limit or budget, so no wait would let it in."""

    def __init__(self, message: str, *, window_label: str) -> None:
        super().__init__(message)
        self.window_label = window_label


class TooManyImages(NeverFits):
    """More images than an image limit allows in a whole window."""

    def __init__(
        self, *, limit: int, window_label: str, requested: int, whose: str = "your"
    ) -> None:
        self.limit = limit
        self.requested = requested
        super().__init__(
            f"You asked for {count_images(requested)}, but {whose} limit allows at most "
            f"{count_images(limit)} per {window_label}, so this can never fit; "
            f"ask for {_at_most(limit)}.",
            window_label=window_label,
        )


@dataclass(frozen=True)
class Alternative:
    """A cheaper variant of a request that fits the budget: its options and estimated cost."""

    quality: str
    size: str
    n: int
    cost_usd: float
    changed: tuple[str, ...]  # which of "quality", "size", "n" differ from the request

    @property
    def label(self) -> str:
        """What to ask for, e.g. 'quality medium' or 'quality low and 1 image'."""
        words = {"quality": f"quality {self.quality}", "size": f"size {self.size}"}
        words["n"] = count_images(self.n)
        return _join([words[name] for name in self.changed], "and")


class OverBudget(NeverFits):
    """The request's estimate is above a whole dollar budget; ``alternatives`` would fit."""

    def __init__(
        self,
        *,
        budget_usd: float,
        window_label: str,
        estimate_usd: float,
        alternatives: Sequence[Alternative] = (),
        auto_quality: bool = False,
        auto_size: bool = False,
        whose: str = "your",
    ) -> None:
        self.budget_usd = budget_usd
        self.estimate_usd = estimate_usd
        self.alternatives = tuple(alternatives)
        notes = []
        if auto_quality:
            notes.append("auto quality is reserved at the high-quality price")
        if auto_size:
            notes.append(
                "auto size " + ("at" if notes else "is reserved at") + " the priciest size"
            )
        why = f" ({', '.join(notes)})" if notes else ""
        message = (
            f"This request would cost up to {format_usd_up(estimate_usd)}{why}, more than {whose} "
            f"whole budget of {format_usd(budget_usd)} per {window_label}, so it can never fit. "
        )
        if self.alternatives:
            # Shown as an upper bound, but never above the budget it is said to fit.
            offers = [
                f"{a.label} (up to {format_usd_up(a.cost_usd, cap=budget_usd)})"
                for a in self.alternatives
            ]
            message += f"Ask for {_join(offers, 'or')} instead."
        else:
            message += "Ask for a lower quality, a smaller size or fewer images."
        super().__init__(message, window_label=window_label)


class BudgetTooSmall(NeverFits):
    """Even the cheapest image is above a whole dollar budget: only the operator can help."""

    def __init__(
        self,
        *,
        budget_usd: float,
        window_label: str,
        cheapest_usd: float,
        cheapest_size: str,
        source_count: int = 0,
        whose: str = "your",
    ) -> None:
        self.budget_usd = budget_usd
        self.cheapest_usd = cheapest_usd
        self.cheapest_size = cheapest_size
        self.source_count = source_count
        budget = f"{_capital(whose)} budget of {format_usd(budget_usd)} per {window_label}"
        cheapest = f"one low-quality {cheapest_size} image"
        cost = format_usd_up(cheapest_usd)
        # The requester's own budget is the operator's setting; a shared one may be an admin's.
        raiser = "the bot's operator" if whose == "your" else "an admin"
        if source_count:
            message = (
                f"{budget} is too small for this edit: even {cheapest} made from "
                f"{_units(source_count, 'attached image')} costs up to {cost}. Attach fewer "
                f"images, or ask {raiser} to raise the budget."
            )
        else:
            message = (
                f"{budget} is too small for any image: even {cheapest} costs up to {cost}. "
                f"Please ask {raiser} to raise it."
            )
        super().__init__(message, window_label=window_label)


class ContentBlocked(UserFacingError):
    """OpenAI's safety system refused the prompt or an input image."""

    def __init__(self, categories: Sequence[str] = ()) -> None:
        self.categories = tuple(categories)
        named = f" (category: {', '.join(self.categories)})" if self.categories else ""
        super().__init__(
            "The image service's safety system blocked this request"
            f"{named}. Nothing was charged; try rewording the prompt."
        )


class QuotaExhausted(UserFacingError):
    """The operator's OpenAI account has no credit left (``insufficient_quota``)."""

    def __init__(self) -> None:
        super().__init__(
            "The bot's OpenAI account is out of credit, so no images can be made right now. "
            "Please tell the bot's operator."
        )


class ProviderUnavailable(UserFacingError):
    """The image service kept failing (5xx, timeouts, rate limits) after retries."""

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        self.detail = detail
        self.retry_after = retry_after
        when = f"in {format_duration(retry_after)}" if retry_after else "in a minute or two"
        super().__init__(
            f"The image service is unavailable right now. Nothing was charged; try again {when}."
        )


class ProviderMisconfigured(UserFacingError):
    """The API key or project is wrong (401/403): the operator has to fix the settings."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            "The bot can't reach the image service because of a configuration problem. "
            "Please tell the bot's operator."
        )


class JobNotFound(UserFacingError):
    """A reply or button names a job the store does not have."""

    def __init__(self, job_id: str = "") -> None:
        self.job_id = job_id
        super().__init__("I can't find that image any more, so I can't do that with it.")


class ImagePruned(JobNotFound):
    """The job's images were removed by the retention sweep (``kept_days``: None for room)."""

    def __init__(self, job_id: str = "", kept_days: float | None = None) -> None:
        super().__init__(job_id)
        self.kept_days = kept_days
        why = (
            "the oldest images are removed to make room"
            if kept_days is None
            else f"images are kept for {format_duration(kept_days * 86_400)}"
        )
        message = f"That image is no longer kept ({why}); nothing was charged."
        self.args = (message,)
        self.user_message = message


class NotAllowed(UserFacingError):
    """The user may not do this."""


class JobCancelled(UserFacingError):
    """The requester or an admin cancelled the job (``by``: their user id) before it was made."""

    def __init__(self, job_id: str, by: str) -> None:
        self.job_id = job_id
        self.by = by
        super().__init__("This request was cancelled. Nothing was charged.")


class InternalError(UserFacingError):
    """Something unexpected broke a job; the cause is logged under ``job_id``."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"Something went wrong on the bot's side (job {job_id}); it has been logged. "
            "Nothing was charged; please try again."
        )


class ConfigError(ImagineError):
    """A setting is missing or invalid; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def unreachable(variable: str, url: str, exc: BaseException) -> ConfigError:
    """The start-up refusal for a platform API that can't be reached at all."""
    host = urlsplit(url).netloc or url
    return ConfigError(
        variable,
        f"can't reach {host} ({type(exc).__name__}); check the network connection, or this "
        "setting if you use a proxy",
    )


def format_duration(seconds: float) -> str:
    """Say a wait in plain words: '45 seconds', '12 minutes', '3 hours 5 minutes'."""
    s = max(1, round(seconds))
    if s < 90:
        return _units(s, "second")
    minutes = round(s / 60)
    if minutes < 90:
        return _units(minutes, "minute")
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return _units(hours, "hour") + (f" {_units(rest, 'minute')}" if rest else "")
    return _units(round(hours / 24), "day")


_EVERY = {"minute": "per-minute", "hour": "hourly", "day": "daily", "week": "weekly"}


def every(window_label: str) -> str:
    """A window as an adjective: 'daily', 'monthly'."""
    return _EVERY.get(window_label, f"{window_label}ly")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def count_images(n: int) -> str:
    """'1 image', '3 images'."""
    return _units(n, "image")


def format_usd(dollars: float) -> str:
    """A dollar amount as set or spent: '$0.50', '$0.005' (sub-cent digits kept)."""
    text = f"{dollars:.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def format_usd_up(dollars: float, *, cap: float | None = None) -> str:
    """An estimate as an upper bound: rounded up to the cent, but never shown above ``cap``."""
    # Rounding first keeps float noise such as 0.07000000001 from showing as $0.08.
    rounded = math.ceil(round(dollars * 100, 6)) / 100
    if cap is not None and rounded > cap:
        return format_usd(cap)
    return f"${rounded:.2f}"


def _units(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _at_most(n: int) -> str:
    return "1 image" if n == 1 else f"{n} or fewer"


def _all(n: int) -> str:
    return "both" if n == 2 else f"all {n}"


def _join(items: Sequence[str], word: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"
