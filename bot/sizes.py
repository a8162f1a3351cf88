"""Which image sizes each model makes, and the nearest size that works when one doesn't."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import InvalidSize

STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
# gpt-image-2's custom-size rules, as OpenAI's image guide states them: edges divisible by 16,
# longest edge at most 3840, at most 3:1 either way, and a pixel count within these bounds.
MIN_PIXELS, MAX_PIXELS, MAX_EDGE = 655_360, 8_294_400, 3840
_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class SizeProblem:
    """Why ``size`` won't work for a model (``reason``) and a size that would (``suggestion``)."""

    reason: str
    suggestion: str | None
    custom_needs_gpt_image_2: bool = False


def takes_custom_sizes(model: str) -> bool:
    """True for models that accept any WIDTHxHEIGHT within the rules (the gpt-image-2 family)."""
    return model.startswith("gpt-image-2")


def size_rule_broken(width: int, height: int) -> str | None:
    """The first gpt-image-2 size rule ``width``x``height`` breaks, in words (None if none)."""
    if width % 16 or height % 16:
        return "Width and height must both be divisible by 16"
    if max(width, height) > 3 * min(width, height):
        return "The shape can be at most 3 times as wide as tall (or as tall as wide)"
    if max(width, height) > MAX_EDGE:
        return f"The longest side can be at most {MAX_EDGE} pixels"
    if width * height < MIN_PIXELS:
        return f"The image must have at least {MIN_PIXELS:,} pixels (about 1024x640)"
    if width * height > MAX_PIXELS:
        return f"The image can have at most {MAX_PIXELS:,} pixels (3840x2160)"
    return None


def suggest_size(width: int, height: int) -> str:
    """The nearest size (same shape where possible) that obeys every gpt-image-2 rule."""
    width, height = max(width, 1), max(height, 1)
    if max(width, height) > 3 * min(width, height):
        if width > height:
            width = 3 * height
        else:
            height = 3 * width
    scale = min(1.0, MAX_EDGE / max(width, height), (MAX_PIXELS / (width * height)) ** 0.5)
    scale = max(scale, (MIN_PIXELS / (width * height)) ** 0.5)
    candidates = []
    for snap_w in (round, int, lambda v: int(v) + 1):
        for snap_h in (round, int, lambda v: int(v) + 1):
            w = max(16, snap_w(width * scale / 16) * 16)
            h = max(16, snap_h(height * scale / 16) * 16)
            if size_rule_broken(w, h) is None:
                candidates.append((abs(w - width * scale) + abs(h - height * scale), w, h))
    if not candidates:
        return "1024x1024"
    _, w, h = min(candidates)
    return f"{w}x{h}"


def nearest_standard_size(width: int, height: int) -> str:
    """The standard size closest in shape: square, landscape 3:2 or portrait 2:3."""
    ratio = max(width, 1) / max(height, 1)
    if ratio >= 1.25:
        return "1536x1024"
    if ratio <= 0.8:
        return "1024x1536"
    return "1024x1024"


def size_problem(model: str, size: str) -> SizeProblem | None:
    """Why ``model`` can't make ``size``, or None when it can."""
    if size == "auto" or size in STANDARD_SIZES:
        return None
    match = _SIZE.match(size)
    if not takes_custom_sizes(model):
        standard = nearest_standard_size(int(match[1]), int(match[2])) if match else None
        return SizeProblem(
            f"{model} only makes 1024x1024, 1536x1024 or 1024x1536 (or auto); "
            "custom sizes need gpt-image-2",
            standard,
            custom_needs_gpt_image_2=True,
        )
    if not match:
        return SizeProblem(
            f"Can't read the size {size!r}; write it like 1536x1024, or use auto", None
        )
    width, height = int(match[1]), int(match[2])
    broken = size_rule_broken(width, height)
    if broken is None:
        return None
    return SizeProblem(f"{broken}, so {size} won't work", suggest_size(width, height))


def check_size(model: str, size: str) -> None:
    """Raise InvalidSize, naming the broken rule and a size that would work."""
    problem = size_problem(model, size)
    if problem is None:
        return
    if problem.custom_needs_gpt_image_2 or problem.suggestion is None:
        raise InvalidSize(f"{problem.reason}.")
    raise InvalidSize(f"{problem.reason}. Try {problem.suggestion}.")
