"""Pillow work on attachments: sniff, validate and normalise inputs, check masks, fit outputs.

Every function is synchronous and CPU-bound; callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import PurePath

from PIL import Image, ImageOps

from bot.errors import AttachmentRejected
from bot.image_budget import decode_budget
from bot.image_encoding import api_mode, encode, on_white, shrink_to_fit
from bot.image_metadata import strip_metadata
from bot.models import MIME_BY_FORMAT, SourceImage

# Every decode here is bounded by our own pixel caps, checked before any pixel is read; Pillow's
# warning about its lower default would only print a line on the user's terminal or in the log.
# A filter installed once, at import, is safe for every thread (catch_warnings is not).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

MIB = 1024 * 1024
MASK_LIMIT_BYTES = 4 * MIB  # the edits endpoint refuses masks of 4 MB or more

# Formats with a reliable signature. Loose-signature formats (TGA, PCX, SGI...) would claim random
# bytes, and EPS would run Ghostscript on untrusted input.
_OPENABLE = (
    "PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "ICO", "ICNS", "PSD", "JPEG2000",
    "QOI", "PPM", "DDS",
)  # fmt: skip
_KEPT_AS_IS = {"png", "jpeg", "webp"}
_SUFFIXES = {"png": (".png",), "jpeg": (".jpg", ".jpeg", ".jpe"), "webp": (".webp",)}
_MIME_EXTRA = {"gif": "image/gif", "bmp": "image/bmp", "tiff": "image/tiff", "avif": "image/avif"}
# Outputs and previews have no operator limit; this keeps one call's decode bounded anyway.
_WORK_PIXEL_CAP = 100_000_000
_ORIENTATION = 0x0112
_PNG_BIT_DEPTH = 24  # signature (8) + IHDR length and type (8) + width and height (8)

_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif",
    b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff",
}  # fmt: skip
_DAMAGED = "looks damaged (it may be incomplete); try saving or exporting it again"
_METADATA_BOMB = (
    "is too large inside: its text or metadata unpacks to far more than the image needs; "
    "try exporting it again without metadata"
)
# Pillow's refusals of a compressed text, profile or metadata chunk that unpacks too far.
_METADATA_BOMB_SIGNS = ("decompressed data too large", "too much memory used in text chunks")
_UNSUPPORTED = ", which isn't supported; please send it as PNG, JPEG or WebP"
_NOT_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document, not an image"),
    (b"%!PS", "a PostScript file, not an image"),
    (b"PK\x03\x04", "a ZIP archive (or Office document), not an image"),
    (b"\x1f\x8b", "a gzip archive, not an image"),
    (b"Rar!\x1a\x07", "a RAR archive, not an image"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive, not an image"),
    (b"\x1a\x45\xdf\xa3", "a WebM/Matroska video, not an image"),
    (b"OggS", "an Ogg audio or video file, not an image"),
    (b"ID3", "an MP3 audio file, not an image"),
    (b"fLaC", "a FLAC audio file, not an image"),
    (b"MZ", "a Windows program, not an image"),
    (b"\x7fELF", "a program, not an image"),
    (b"\xff\x0a", "a JPEG XL image" + _UNSUPPORTED),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image" + _UNSUPPORTED),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes really hold ("png", "jpeg", ...), or None."""
    try:
        with Image.open(io.BytesIO(data), formats=_OPENABLE) as im:
            return _format_name(im)
    except Exception:
        return _magic_format(data)


def normalise_source(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> SourceImage:
    """Check an input image and return it in a form the edits endpoint accepts."""
    im = _open_checked(data, filename, max_bytes=max_bytes, max_pixels=max_pixels)
    fmt = _format_name(im)
    width, height = im.size
    turned = _may_turn(im, fmt, data)
    if fmt == "jpeg" and _keepable(im, fmt, data, turned):
        # DCT scaling still walks the whole entropy stream, so a truncated file still fails,
        # at 1/64 of the memory of a full decode.
        im.draft(im.mode, (math.ceil(width / 8), math.ceil(height / 8)))
        with decode_budget.reserve(_stored_bytes(im)):
            _load(im, filename)
        kept = strip_metadata(data, fmt)
        return SourceImage(kept, _named(filename, fmt), MIME_BY_FORMAT[fmt], width, height)
    pixels = width * height
    # The decoded frame, then (unless it goes as it came) a converted copy, and a second
    # orientation while it is turned upright.
    cost = _stored_bytes(im)
    if not _keepable(im, fmt, data, turned):
        converted = im.mode not in ("RGB", "RGBA") or "transparency" in im.info
        cost += 4 * pixels * (int(turned) + int(converted)) + _scaling_bytes(im)
    with decode_budget.reserve(cost) as held:
        # Load before looking at EXIF: a PNG may carry its eXIf chunk after the pixels.
        _load(im, filename)
        if _keepable(im, fmt, data, _orientation(im) not in (None, 1)):
            kept = strip_metadata(data, fmt)
            return SourceImage(kept, _named(filename, fmt), MIME_BY_FORMAT[fmt], width, height)
        _upright(im)
        # Keep an RGB colour profile (phones tag photos Display P3); a CMYK or grey one no longer
        # fits.
        icc = im.info.get("icc_profile") if im.mode in ("RGB", "RGBA", "P") else None
        out = api_mode(im, filename)
        del im
        held.shrink(4 * pixels)  # only the converted image is left, and the encoder's buffers
        if fmt == "jpeg":
            encoded, out_fmt = encode(out, "jpeg", 95, icc), "jpeg"
        else:
            encoded, out_fmt = encode(out, "png", icc=icc), "png"
        if len(encoded) > max_bytes:
            del encoded
            encoded, out_fmt, out = shrink_to_fit(out, max_bytes, filename)
        return SourceImage(
            encoded, _named(filename, out_fmt), MIME_BY_FORMAT[out_fmt], out.width, out.height
        )


def prepare_mask(
    data: bytes, filename: str, first: SourceImage, *, max_bytes: int, max_pixels: int
) -> SourceImage:
    """Check a mask against the first image and return it as a same-size PNG with alpha."""
    im = _open_checked(data, filename, max_bytes=max_bytes, max_pixels=max_pixels)
    # The decoded mask, its RGBA and resized copies, and the alpha planes pulled from them.
    with decode_budget.reserve(_stored_bytes(im) + 14 * im.width * im.height):
        return _prepare_mask(im, filename, first)


def _prepare_mask(im: Image.Image, filename: str, first: SourceImage) -> SourceImage:
    _load(im, filename)
    if not im.has_transparency_data:
        raise AttachmentRejected(
            filename, "has no transparency; the transparent areas mark what to change"
        )
    _upright(im)
    mask = api_mode(im, filename)
    del im
    if mask.mode != "RGBA":
        mask = mask.convert("RGBA")
    target = (first.width, first.height)
    if first.width <= 0 or first.height <= 0:
        target = _header_size(first)
    if mask.size != target:
        (mw, mh), (tw, th) = mask.size, target
        if abs(mw * th - mh * tw) > 0.01 * tw * mh:
            raise AttachmentRejected(
                filename,
                f"is {mw}×{mh} but the image it masks is {tw}×{th}; "
                "the mask must have the same size as the image",
            )
        mask = mask.resize(target, Image.Resampling.LANCZOS)
    alpha = mask.getchannel("A")
    if alpha.getextrema()[0] != 0:
        raise AttachmentRejected(
            filename,
            "nothing to edit: no transparent pixels (the transparent areas mark what to change)",
        )
    encoded = encode(mask, "png")
    if len(encoded) > MASK_LIMIT_BYTES:
        # Only alpha matters to the API, so drop the colours, then any partial transparency.
        mask = Image.merge("RGBA", (*(Image.new("L", mask.size, 0),) * 3, alpha))
        encoded = encode(mask, "png")
    if len(encoded) > MASK_LIMIT_BYTES:
        binary = alpha.point(lambda a: 0 if a == 0 else 255)
        mask.putalpha(binary)
        encoded = encode(mask, "png")
    if len(encoded) > MASK_LIMIT_BYTES:
        raise AttachmentRejected(filename, "is too detailed: the mask must be smaller than 4 MB")
    return SourceImage(encoded, _named(filename, "png"), "image/png", mask.width, mask.height)


def fit_for_upload(data: bytes, filename: str, limit_bytes: int) -> tuple[bytes, str, str]:
    """Return the image (re-encoded and shrunk if needed) within a platform's upload limit."""
    if len(data) <= limit_bytes:
        return data, filename, _mime(sniff_format(data))
    im = _open_checked(data, filename, max_bytes=len(data), max_pixels=_WORK_PIXEL_CAP)
    # The decoded image, an upright or converted copy, and a flattened copy for JPEG.
    with decode_budget.reserve(_stored_bytes(im) + 8 * im.width * im.height):
        _load(im, filename)
        _upright(im)
        flat = api_mode(im, filename)
        del im
        encoded, fmt, _ = shrink_to_fit(flat, limit_bytes, filename)
    return encoded, _named(filename, fmt, force=True), MIME_BY_FORMAT[fmt]


def preview_jpeg(data: bytes, max_side: int = 512) -> bytes:
    """A small JPEG of the image, for progress previews."""
    name = "preview image"
    im = _open_checked(data, name, max_bytes=len(data), max_pixels=_WORK_PIXEL_CAP)
    if _format_name(im) == "jpeg":
        im.draft("RGB", (max_side, max_side))
    with decode_budget.reserve(_stored_bytes(im) + 8 * im.width * im.height):
        _load(im, name)
        _upright(im)
        small = api_mode(im, name)
        del im
        small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return encode(on_white(small), "jpeg", 80)


# --- intake ------------------------------------------------------------------------------


def _open_checked(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse what is too big before any pixel is decoded."""
    if len(data) > max_bytes:
        size, limit = _megabytes(len(data), max_bytes), _trim(max_bytes / MIB)
        raise AttachmentRejected(filename, f"is {size} MB; the limit is {limit} MB")
    try:
        im = Image.open(io.BytesIO(data), formats=_OPENABLE)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires during open for absurd sizes; report it in our terms.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"about {_trim(int(found.group(1)) / 1e6)} megapixels" if found else "too large"
        raise AttachmentRejected(
            filename, f"is {size}; the limit is {_trim(max_pixels / 1e6)} megapixels"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        if _is_metadata_bomb(exc):
            raise AttachmentRejected(filename, _METADATA_BOMB) from None
        raise AttachmentRejected(filename, _describe_unreadable(data)) from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise AttachmentRejected(filename, _DAMAGED)
    if width * height > max_pixels:
        raise AttachmentRejected(
            filename,
            f"is {width}×{height} pixels ({_trim(width * height / 1e6)} megapixels); "
            f"the limit is {_trim(max_pixels / 1e6)} megapixels",
        )
    return im


def _load(im: Image.Image, filename: str) -> None:
    """Decode the first frame, turning any decoder complaint into a plain refusal."""
    try:
        im.load()
    except Image.DecompressionBombError:
        raise AttachmentRejected(filename, "is too large to open safely") from None
    except MemoryError:
        raise
    except Exception as exc:
        if _is_metadata_bomb(exc):
            raise AttachmentRejected(filename, _METADATA_BOMB) from None
        raise AttachmentRejected(filename, _DAMAGED) from None


def _is_metadata_bomb(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, ValueError) and any(sign in text for sign in _METADATA_BOMB_SIGNS)


def _stored_bytes(im: Image.Image) -> int:
    """Bytes Pillow allocates to decode the (possibly drafted) frame: four a pixel but for few."""
    per_pixel = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}.get(im.mode, 4)
    return per_pixel * im.width * im.height


def _scaling_bytes(im: Image.Image) -> int:
    """Extra bytes to scale high-bit greyscale to 8 bits (a float copy, then an 8-bit one)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return 5 * im.width * im.height
    return 0


def _describe_unreadable(data: bytes) -> str:
    """Why bytes that Pillow cannot open are refused, naming what they are when we can tell."""
    if _magic_format(data) is not None:
        return _DAMAGED
    for magic, what in _NOT_IMAGE_MAGIC:
        if data.startswith(magic):
            return f"is {what}"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "is a HEIC/HEIF photo" + _UNSUPPORTED
        if brand in (b"avif", b"avis"):
            return _DAMAGED
        if brand.startswith(b"M4A"):
            return "is an audio file, not an image"
        return "is a video, not an image"
    if data[:4] == b"RIFF" and data[8:12] in (b"AVI ", b"WAVE"):
        kind = "an AVI video" if data[8:12] == b"AVI " else "a WAV audio file"
        return f"is {kind}, not an image"
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "is an SVG drawing" + _UNSUPPORTED
    if head.startswith((b"<!doctype html", b"<html")):
        return "is a web page, not an image"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "is not an image file"
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "is a text file, not an image"
    return "is not an image file"


def _magic_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _IMAGE_MAGIC.items() if data.startswith(magic)), None)


def _format_name(im: Image.Image) -> str:
    # Phone cameras write MPO (a JPEG with extra frames appended); it is a JPEG to everyone else.
    fmt = (im.format or "").lower()
    return "jpeg" if fmt == "mpo" else fmt


def _keepable(im: Image.Image, fmt: str, data: bytes, turned: bool) -> bool:
    if fmt not in _KEPT_AS_IS or turned:
        return False
    if fmt == "png" and data[_PNG_BIT_DEPTH : _PNG_BIT_DEPTH + 1] != b"\x08":
        # Pillow hands 16-bit colour over as 8-bit "RGB"/"RGBA"; the file itself is still 16-bit.
        return False
    if fmt == "jpeg":
        return im.mode == "RGB"
    if getattr(im, "is_animated", False):
        return False
    return im.mode == "RGBA" or (im.mode == "RGB" and "transparency" not in im.info)


def _may_turn(im: Image.Image, fmt: str, data: bytes) -> bool:
    """Whether EXIF may ask for a turn, found without decoding a pixel."""
    if fmt == "png" and "exif" not in im.info:
        # Pillow decodes a whole PNG to look for an eXIf chunk after the pixels; the bytes tell
        # as much (a false match in compressed data only makes the estimate generous).
        return b"eXIf" in data
    return _orientation(im) not in (None, 1)


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_ORIENTATION)
    except Exception:
        return None  # unreadable EXIF: the pixels as stored are all we can trust
    return value if isinstance(value, int) else None


def _upright(im: Image.Image) -> None:
    """Apply the EXIF orientation in place (cameras store pixels sideways and tag them)."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except MemoryError:
        raise
    except Exception:
        return  # unreadable EXIF: keep the pixels as stored rather than refuse the image


def _header_size(image: SourceImage) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(image.data), formats=_OPENABLE) as im:
            return im.size
    except Exception:
        raise AttachmentRejected(image.filename, _describe_unreadable(image.data)) from None


# --- names and numbers ----------------------------------------------------------------------


def _named(filename: str, fmt: str, *, force: bool = False) -> str:
    """The filename with an extension matching ``fmt`` (kept if it already matches)."""
    path = PurePath(filename or "image")
    if not force and path.suffix.lower() in _SUFFIXES[fmt]:
        return path.name
    return (path.stem or "image") + _SUFFIXES[fmt][0]


def _mime(fmt: str | None) -> str:
    if fmt is None:
        return "application/octet-stream"
    return MIME_BY_FORMAT.get(fmt) or _MIME_EXTRA.get(fmt) or f"image/{fmt}"


def _trim(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _megabytes(size: int, limit: int) -> str:
    """The size in MB with enough decimals that it never reads as equal to the limit."""
    texts = [f"{size / MIB:.{decimals}f}" for decimals in (1, 2, 3)]
    return next((t for t in texts if float(t) > limit / MIB), texts[-1]).removesuffix(".0")
