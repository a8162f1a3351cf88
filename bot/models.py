"""Plain frozen values that flow between the adapters, the service, the store and the provider."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

MIME_BY_FORMAT = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Requester:
    """Who asked, and where: platform ids as strings (team = Discord guild or Slack workspace)."""

    platform: str
    user_id: str
    team_id: str = ""
    channel_id: str = ""
    display_name: str = ""
    # The tiers the user belongs to: Discord role ids or Slack user group ids.
    groups: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The id limits are counted under, e.g. ``discord:1234`` or ``slack:U123``."""
        return f"{self.platform}:{self.user_id}"

    @property
    def hashed_id(self) -> str:
        """A stable, non-reversible id for the API's ``user`` field."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ImageOptions:
    """What to ask the model for; values are the API's own words."""

    model: str = "gpt-image-2"
    size: str = "auto"
    quality: str = "auto"
    n: int = 1
    background: str = "auto"
    output_format: str = "png"
    output_compression: int | None = None
    moderation: str = "auto"
    partial_images: int = 0


@dataclass(frozen=True)
class SourceImage:
    """An input image (or mask) after validation: bytes in an API-accepted format."""

    data: bytes
    filename: str
    mime: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class ImageRequest:
    """One thing a user asked for. No sources means generation; one or more means an edit."""

    requester: Requester
    prompt: str
    options: ImageOptions = field(default_factory=ImageOptions)
    sources: tuple[SourceImage, ...] = ()
    mask: SourceImage | None = None
    parent_job_id: str | None = None
    enhance: bool = False  # rewrite the prompt with prompt help before making the image

    @property
    def is_edit(self) -> bool:
        """True when the request edits source images."""
        return bool(self.sources)


@dataclass(frozen=True)
class Usage:
    """Token counts from the API's ``usage`` object (missing details count as zero)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    cached_input_tokens: int = 0
    cached_image_tokens: int = 0


@dataclass(frozen=True)
class GeneratedImage:
    """One image the provider returned."""

    data: bytes
    output_format: str

    @property
    def mime(self) -> str:
        """The MIME type of ``data``."""
        return MIME_BY_FORMAT.get(self.output_format, "application/octet-stream")


@dataclass(frozen=True)
class ProviderResult:
    """Everything the provider learnt from one successful call."""

    images: tuple[GeneratedImage, ...]
    usage: Usage | None = None
    request_id: str | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None


@dataclass(frozen=True)
class StoredImage:
    """A produced image saved under the data directory."""

    index: int
    path: Path
    mime: str

    def read_bytes(self) -> bytes:
        """The image file's bytes."""
        return self.path.read_bytes()


@dataclass(frozen=True)
class JobRecord:
    """A job as the store keeps it."""

    id: str
    requester: Requester
    prompt: str
    options: ImageOptions
    status: str
    created_at: float
    is_edit: bool = False
    parent_job_id: str | None = None
    source_count: int = 0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    charged_images: int = 0
    platform_ref: dict[str, object] = field(default_factory=dict)
    charged_cost: float = 0.0  # what counts against limits: the reservation, then the cost
    cancelled_by: str | None = None  # the requester key of who cancelled it

    @property
    def unfinished(self) -> bool:
        """Still waiting in line or being made."""
        return self.status in ("queued", "running")


@dataclass(frozen=True)
class JobResult:
    """A finished, delivered-to-disk job: what adapters render."""

    job_id: str
    request: ImageRequest
    images: tuple[StoredImage, ...]
    usage: Usage | None
    cost_usd: float
    elapsed_s: float
    size: str | None = None
    quality: str | None = None
    original_prompt: str | None = None  # what the user wrote, when prompt help rewrote it


# --- progress events -------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """The job is admitted; ``position`` 0 means a provider slot is free, 1 is next in line."""

    job_id: str
    position: int


@dataclass(frozen=True)
class Started:
    """A provider call for the job has begun."""

    job_id: str


@dataclass(frozen=True)
class PartialImage:
    """A streamed preview arrived."""

    job_id: str
    index: int
    data: bytes
    output_format: str


@dataclass(frozen=True)
class Finished:
    """The job reached a final state (``status`` says which)."""

    job_id: str
    status: str


@dataclass(frozen=True)
class PromptRewritten:
    """Prompt help rewrote the prompt; the image is made from ``prompt``."""

    job_id: str
    prompt: str


ProgressEvent = Queued | Started | PartialImage | PromptRewritten | Finished
ProgressCallback = Callable[[ProgressEvent], Awaitable[None]]
PartialCallback = Callable[[int, bytes, str], Awaitable[None]]
