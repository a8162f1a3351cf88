"""The one exception tree of imagine-bot.

    ImagineError
    ├── UserFacingError              message is safe to show a user as is
    │   ├── InvalidRequest           a bad option, prompt or size (``param`` names it)
    │   │   └── InvalidSize          a custom WxH size that breaks a rule
    │   ├── AttachmentRejected       an input image or mask was refused (``filename``, ``reason``)
    │   ├── LimitExceeded            image limit used up (``retry_after``, ``resets_at``)
    │   ├── BudgetExceeded           dollar budget used up (``retry_after``, ``resets_at``)
    │   ├── ContentBlocked           the safety system refused (``categories``)
    │   ├── QuotaExhausted           the operator's OpenAI account is out of credit
    │   ├── ProviderUnavailable      the image service failed after retries (``retry_after``)
    │   ├── ProviderMisconfigured    a bad key / missing permission: the operator must act
    │   ├── JobNotFound              a button or reply points at a job the store does not know
    │   ├── NotAllowed               the user may not do this (delete someone else's image)
    │   ├── JobInterrupted           the bot restarted while the job ran
    │   └── InternalError            an unexpected failure, already logged with ``job_id``
    └── ConfigError                  a setting is missing or invalid (``variable``)

Anything else that escapes is a bug: log it with the job id and show a generic message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


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
    """The requester has used up an image limit; ``resets_at`` is a Unix time."""

    def __init__(
        self,
        *,
        limit: int,
        window_label: str,
        used: int,
        requested: int,
        retry_after: float,
        now: float | None = None,
    ) -> None:
        self.limit = limit
        self.window_label = window_label
        self.used = used
        self.requested = requested
        left = max(0, limit - used)
        message = (
            f"You've reached your limit of {limit} images per {window_label} "
            f"({left} left, {requested} asked). Try again in {format_duration(retry_after)}."
        )
        super().__init__(message, retry_after=retry_after, now=now)


class BudgetExceeded(_WindowExceeded):
    """The requester has spent their dollar budget for a window."""

    def __init__(
        self,
        *,
        budget_usd: float,
        window_label: str,
        spent_usd: float,
        retry_after: float,
        now: float | None = None,
    ) -> None:
        self.budget_usd = budget_usd
        self.window_label = window_label
        self.spent_usd = spent_usd
        message = (
            f"You've used your budget of ${budget_usd:.2f} per {window_label} "
            f"(${spent_usd:.2f} spent or reserved). Try again in {format_duration(retry_after)}."
        )
        super().__init__(message, retry_after=retry_after, now=now)


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


class NotAllowed(UserFacingError):
    """The user may not do this."""


class JobInterrupted(UserFacingError):
    """The bot restarted while the job was running."""

    def __init__(self) -> None:
        super().__init__(
            "This request was interrupted because the bot restarted. Nothing was charged; "
            "please try again."
        )


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


def format_duration(seconds: float) -> str:
    """Say a wait in plain words: '45 seconds', '12 minutes', '3 hours 5 minutes'."""
    s = max(1, round(seconds))
    if s < 90:
        return f"{s} second{'s' if s != 1 else ''}"
    minutes = round(s / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} hours" + (f" {rest} minutes" if rest else "")
    return f"{round(hours / 24)} days"
