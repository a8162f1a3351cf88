"""What the OpenAI fake answers with: real images of the asked size and format, and usage."""

from __future__ import annotations

import base64
import io
import math
import os
import time
from functools import lru_cache
from typing import Any

from PIL import Image

from tests.fakes.openai_checks import size_problem

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_TOKEN_FACTOR = {"low": 16, "medium": 48, "high": 96}


def b64(data: bytes) -> str:
    """Base64 text, as ``b64_json`` carries it."""
    return base64.b64encode(data).decode()


def output_tokens(size: tuple[int, int], quality: str) -> int:
    """gpt-image-2 output tokens for one image (the community formula from the notes)."""
    f = _TOKEN_FACTOR.get(quality, 48)
    width, height = size
    short, long = min(width, height), max(width, height)
    s = (2 * f * short + long) // (2 * long)
    return math.ceil(f * s * (2_000_000 + width * height) / 4_000_000)


@lru_cache(maxsize=64)
def render_image(
    size: tuple[int, int], fmt: str, seed: int, transparent: bool, noise: bool
) -> bytes:
    """A real image of ``size`` in ``fmt``: a gradient tinted by ``seed``, or random noise."""
    width, height = size
    if noise:
        img = Image.frombytes("RGB", size, os.urandom(width * height * 3))
    else:
        ramp = Image.linear_gradient("L").resize(size)
        tint = Image.new("L", size, (seed * 57 + 80) % 256)
        img = Image.merge("RGB", (ramp, tint, ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    if transparent:
        img = img.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(size))
    buf = io.BytesIO()
    img.save(buf, _PIL_FORMATS[fmt], **({"quality": 80} if fmt != "png" else {}))
    return buf.getvalue()


def out_size(body: dict[str, Any], is_edit: bool) -> tuple[int, int]:
    """The size the API would answer with, ``auto`` resolved as it does."""
    size = body.get("size") or ("1024x1024" if is_edit else "auto")
    if size != "auto":
        w, h = size.split("x")
        return int(w), int(h)
    first = body.get("_first_size")
    if not is_edit or first is None:
        return (1024, 1024)
    width, height = first
    # keep the source's shape inside gpt-image-2's limits, on the 16-pixel grid
    scale = min(1.0, 3840 / max(width, height), math.sqrt(8_294_400 / (width * height)))
    scale = max(scale, math.sqrt(655_360 / (width * height)))
    snap = math.ceil if scale > 1 else math.floor
    width, height = snap(width * scale / 16) * 16, snap(height * scale / 16) * 16
    if size_problem("gpt-image-2", f"{width}x{height}"):
        return (1024, 1024)
    return width, height


def image_result(body: dict[str, Any], is_edit: bool, noise: bool) -> dict[str, Any]:
    """The ImagesResponse for a valid body; ``_``-prefixed keys are for the streamer only."""
    size = out_size(body, is_edit)
    quality = body.get("quality") or "auto"
    quality = "medium" if quality == "auto" else quality
    transparent = body.get("background") == "transparent"
    fmt = body.get("output_format") or "png"
    n = body.get("n") or 1
    images = [render_image(size, fmt, i, transparent, noise) for i in range(n)]
    text_tokens = max(1, len(str(body.get("prompt", ""))) // 4)
    image_tokens = 0
    if is_edit:
        count = len(body["image"]) if isinstance(body.get("image"), list) else 1
        image_tokens = 388 * count  # a plausible per-image input cost
    out = n * (output_tokens(size, quality) + 100 * (body.get("partial_images") or 0))
    usage = {
        "input_tokens": text_tokens + image_tokens,
        "output_tokens": out,
        "total_tokens": text_tokens + image_tokens + out,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
    }
    return {
        "created": int(time.time()),
        "data": [{"b64_json": b64(img)} for img in images],
        "background": "transparent" if transparent else "opaque",
        "output_format": fmt,
        "size": f"{size[0]}x{size[1]}",
        "quality": quality,
        "usage": usage,
        "_images": images,
        "_size": size,
    }
