"""What a user can ask for, as plain values: every platform builds these and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from bot.models import ImageOptions, Requester


@dataclass(frozen=True)
class Overrides:
    """Options a user chose for one request; None keeps the default (or the edited job's)."""

    size: str | None = None
    quality: str | None = None
    n: int | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    partial_images: int | None = None

    def apply(self, options: ImageOptions) -> ImageOptions:
        """``options`` with every chosen value put in."""
        return replace(
            options,
            size=_chosen(self.size, options.size),
            quality=_chosen(self.quality, options.quality),
            n=_chosen(self.n, options.n),
            background=_chosen(self.background, options.background),
            output_format=_chosen(self.output_format, options.output_format),
            output_compression=_chosen(self.output_compression, options.output_compression),
            partial_images=_chosen(self.partial_images, options.partial_images),
        )

    def chosen(self) -> dict[str, object]:
        """The options the user set, by name."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


T = TypeVar("T")


def _chosen(value: T | None, default: T) -> T:
    return default if value is None else value


NO_OVERRIDES = Overrides()


@dataclass(frozen=True)
class MessageRef:
    """A message on a platform: ``("discord", "1234")`` or ``("slack", "C1:1700000000.1")``."""

    platform: str
    key: str


@dataclass(frozen=True)
class RemoteFile:
    """A file a user shared, not downloaded yet (the platform says where and how big)."""

    url: str
    filename: str
    size: int | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Generate:
    """Make new images from a prompt."""

    requester: Requester
    prompt: str
    overrides: Overrides = NO_OVERRIDES
    enhance: bool = False  # let prompt help rewrite the prompt first


@dataclass(frozen=True)
class Edit:
    """Change images: a stored job's result, the images of a message, or attached files.

    The first image edited is the parent job's result when there is one: ``job_id`` names it,
    or ``on`` names a message that may be linked to one. Otherwise ``their_files`` (the images
    of the message the edit points at) come first. ``files`` are added after either.
    """

    requester: Requester
    prompt: str
    job_id: str | None = None
    on: MessageRef | None = None
    their_files: tuple[RemoteFile, ...] = ()
    files: tuple[RemoteFile, ...] = ()
    mask: RemoteFile | None = None
    overrides: Overrides = NO_OVERRIDES
    enhance: bool = False


@dataclass(frozen=True)
class Regenerate:
    """The same request as a stored job, asked (and counted) again by ``requester``."""

    requester: Requester
    job_id: str


@dataclass(frozen=True)
class Vary:
    """A variation of a stored job's first image: its prompt and options, asked by ``requester``."""

    requester: Requester
    job_id: str


@dataclass(frozen=True)
class Retry:
    """A stored job's request again (its inputs and options), with a new prompt.

    ``enhance``: prompt help rewrites the job's prompt ("Enhance & retry"). ``suggestion_id``:
    the prompt is the rewrite a user confirmed after a safety block (``service.rephrase``).
    """

    requester: Requester
    job_id: str
    enhance: bool = False
    suggestion_id: str | None = None


Command = Generate | Edit | Regenerate | Vary | Retry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def is_image(file: RemoteFile) -> bool:
    """True for a file that looks like an image (by its type, else by its name)."""
    if file.content_type:
        return file.content_type.lower().startswith("image/")
    return file.filename.lower().endswith(IMAGE_SUFFIXES)


def split_mask(
    files: Sequence[RemoteFile], *, images_only: bool = True
) -> tuple[tuple[RemoteFile, ...], RemoteFile | None]:
    """The files to edit, and the first one named ``mask…`` (it marks what to change).

    With ``images_only``, files that aren't images are left out; without, they stay in and the
    download refuses them with a reason the user can read.
    """
    images: list[RemoteFile] = []
    mask: RemoteFile | None = None
    for file in files:
        if images_only and not is_image(file):
            continue
        if mask is None and file.filename.lower().startswith("mask"):
            mask = file
        else:
            images.append(file)
    return tuple(images), mask


def prompt_of(command: Command) -> str:
    """The words a command's messages quote (a regeneration's come from its job)."""
    return "" if isinstance(command, Regenerate | Vary | Retry) else command.prompt
