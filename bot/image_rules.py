"""What gpt-image accepts: the rules a request must meet before it is worth paying for."""

from __future__ import annotations

from bot.errors import InvalidRequest
from bot.models import ImageRequest
from bot.sizes import check_size

MAX_SOURCES = 16
MAX_PROMPT = 32_000
MAX_IMAGES = 10  # per request
_CHOICES = {
    "quality": ("auto", "low", "medium", "high"),
    "background": ("auto", "opaque", "transparent"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("auto", "low"),
}


def check_options(request: ImageRequest, *, max_images: int = MAX_IMAGES) -> None:
    """Raise InvalidRequest for anything the API would refuse, before paying for a call.

    ``max_images`` is the operator's cap on images per request (at most the API's own).
    """
    options = request.options
    prompt = request.prompt.strip()
    if not prompt:
        raise InvalidRequest("Please describe the image you want.", param="prompt")
    if len(request.prompt) > MAX_PROMPT:
        raise InvalidRequest(
            f"The prompt is {len(request.prompt):,} characters; the limit is {MAX_PROMPT:,}.",
            param="prompt",
        )
    most = min(max_images, MAX_IMAGES)
    if not 1 <= options.n <= most:
        words = f"1 to {most} images" if most > 1 else "1 image"
        raise InvalidRequest(f"You can ask for {words} at once.", param="n")
    if not 0 <= options.partial_images <= 3:
        raise InvalidRequest("Previews (partial images) can be 0 to 3.", param="partial_images")
    for param, allowed in _CHOICES.items():
        value = getattr(options, param)
        if value not in allowed:
            raise InvalidRequest(
                f"{param.replace('_', ' ').capitalize()} {value!r} isn't available; "
                f"choose {', '.join(allowed)}.",
                param=param,
            )
    if options.background == "transparent" and options.output_format not in ("png", "webp"):
        raise InvalidRequest(
            "A transparent background needs PNG or WebP output, not JPEG.", param="background"
        )
    if options.output_compression is not None:
        if options.output_format not in ("jpeg", "webp"):
            raise InvalidRequest(
                "Compression only applies to JPEG or WebP output.", param="output_compression"
            )
        if not 0 <= options.output_compression <= 100:
            raise InvalidRequest(
                "Compression must be between 0 and 100.", param="output_compression"
            )
    if len(request.sources) > MAX_SOURCES:
        raise InvalidRequest(
            f"You attached {len(request.sources)} images; at most {MAX_SOURCES} can be edited "
            "together.",
            param="image",
        )
    if request.mask is not None and not request.sources:
        raise InvalidRequest("A mask needs an image to apply to.", param="mask")
    check_size(options.model, options.size)
