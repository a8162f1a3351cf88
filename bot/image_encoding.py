"""Pixels to API-ready bytes: 8-bit RGB(A) conversion, encoding, and shrinking to a byte limit.

Every function is synchronous and CPU-bound; callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageCms

from bot.errors import AttachmentRejected


def api_mode(im: Image.Image, filename: str) -> Image.Image:
    """The image as 8-bit RGB, or RGBA when it has transparency (what the API expects)."""
    mode = im.mode
    if mode in ("RGB", "RGBA") and "transparency" not in im.info:
        return im
    try:
        if mode == "CMYK":
            return _cmyk_to_rgb(im)
        if mode.startswith("I;16") or mode in ("I", "F"):
            return _to_eight_bit(im).convert("RGB")
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    except ValueError:  # a pixel layout Pillow reads but cannot convert
        raise AttachmentRejected(
            filename, f"uses a colour format ({mode}) that can't be converted"
        ) from None


def _to_eight_bit(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit and float greyscale to 0-255 (a plain convert would clip at 255)."""
    extrema = im.getextrema()
    high = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 0.0
    if im.mode.startswith("I;16"):
        top = 65535.0
    else:
        ceilings = (1.0, 255.0, 65535.0) if im.mode == "F" else (255.0, 65535.0)
        top = next((c for c in ceilings if high <= c), high)
    return im.convert("F").point(lambda v: v * (255.0 / top)).convert("L")


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                im, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below is close enough
    return im.convert("RGB")


def on_white(im: Image.Image) -> Image.Image:
    """The image flattened onto white, as RGB."""
    if im.mode != "RGBA":
        return im.convert("RGB") if im.mode != "RGB" else im
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


_OPTIMIZE_MAX_PIXELS = 8_294_400  # the largest image the API returns (3840×2160)


def encode(im: Image.Image, fmt: str, quality: int = 90, icc: bytes | None = None) -> bytes:
    """The image saved as ``fmt`` ("png", "jpeg" or "webp"), keeping ``icc`` if given."""
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    if fmt == "png":
        im.save(buf, "PNG", **extra)
    elif fmt == "jpeg":
        # Optimised Huffman tables need every coefficient of the image in memory at once (about
        # 3 bytes a pixel) for a few percent fewer bytes; large inputs stream instead.
        optimize = im.width * im.height <= _OPTIMIZE_MAX_PIXELS
        im.save(buf, "JPEG", quality=quality, optimize=optimize, **extra)
    else:
        im.save(buf, "WEBP", quality=quality, **extra)
    return buf.getvalue()


_QUALITIES = (90, 80, 70, 60, 50)
_WEBP_MAX_SIDE = 16383


def shrink_to_fit(
    im: Image.Image, limit_bytes: int, filename: str
) -> tuple[bytes, str, Image.Image]:
    """Lossy re-encode at falling quality, then smaller sizes, until the bytes fit the limit."""
    keep_alpha = im.mode == "RGBA"
    # JPEG would drop transparency, so images with alpha only shrink in size as WebP.
    formats = ("webp",) if keep_alpha else ("webp", "jpeg")
    opaque = None if keep_alpha else on_white(im)
    current = im
    while True:
        smallest = math.inf
        for fmt in formats:
            if fmt == "webp" and max(current.size) > _WEBP_MAX_SIDE:
                continue
            source = current if fmt == "webp" or opaque is None else opaque
            ladder = list(_QUALITIES)
            while ladder:
                encoded = encode(source, fmt, ladder.pop(0))
                if len(encoded) <= limit_bytes:
                    return encoded, fmt, source
                smallest = min(smallest, len(encoded))
                # WebP is slow on large images; far off the limit, only the lowest quality can help.
                if len(encoded) > 2 * limit_bytes:
                    ladder = ladder[-1:]
        width, height = current.size
        if width <= 16 and height <= 16:
            raise AttachmentRejected(filename, "can't be made small enough to upload here")
        # Bytes scale roughly with area: take as many 0.75 steps as the overshoot asks for.
        steps = 1
        if math.isfinite(smallest):
            steps = max(1, math.ceil(math.log(limit_bytes * 0.9 / smallest) / (2 * math.log(0.75))))
        factor = 0.75**steps
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        current = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if opaque is not None:
            opaque = on_white(current)
