"""Drop metadata (text, EXIF, XMP, comments) from PNG, JPEG and WebP files without re-encoding.

Only what changes how the pixels look is kept: transparency, gamma and colour profiles, the
JPEG colour-transform marker. A file that carries nothing else comes back as the same object.
Each function expects a file Pillow has already decoded; an unexpected layout is returned as is.
"""

from __future__ import annotations

import struct

# Ancillary PNG chunks that affect rendering; critical chunks (upper-case first letter) always stay.
_PNG_KEPT = {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP", b"mDCV", b"cLLI"}

_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
_JPEG_APP0, _JPEG_APP2, _JPEG_APP14 = 0xE0, 0xE2, 0xEE

_WEBP_KEPT = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
_WEBP_EXIF_XMP_FLAGS = 0x08 | 0x04


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """The file without its metadata, or ``data`` itself when there is none to drop."""
    try:
        if fmt == "png":
            return _strip_png(data)
        if fmt == "jpeg":
            return _strip_jpeg(data)
        if fmt == "webp":
            return _strip_webp(data)
    except (struct.error, IndexError, ValueError):
        pass  # a layout this walk does not follow: Pillow read it, so send it as it came
    return data


def _strip_png(data: bytes) -> bytes:
    view = memoryview(data)
    kept = [view[:8]]
    dropped = False
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return data
        if kind[:1].isupper() or kind in _PNG_KEPT:
            kept.append(view[pos:end])
        else:
            dropped = True
        pos = end
        if kind == b"IEND":
            break
    if not dropped and pos == len(data):
        return data
    return b"".join(kept)


def _strip_jpeg(data: bytes) -> bytes:
    view = memoryview(data)
    kept = [view[:2]]
    dropped = False
    pos = 2
    while True:
        if data[pos] != 0xFF:
            return data
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            kept.append(view[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == _JPEG_SOS:
            break
        if _keeps_jpeg_segment(marker, data[pos + 4 : min(end, pos + 16)]):
            kept.append(view[pos:end])
        else:
            dropped = True
        pos = end
    # Entropy-coded data escapes every 0xFF, so the first EOI after the scans ends this image;
    # what follows (a phone's extra MPO frames with their own EXIF) is another file's business.
    eoi = data.find(b"\xff\xd9", pos)
    if eoi < 0:
        return data
    end = eoi + 2
    if not dropped and end == len(data):
        return data
    kept.append(view[pos:end])
    return b"".join(kept)


def _keeps_jpeg_segment(marker: int, head: bytes) -> bool:
    if marker == _JPEG_APP2:
        return head.startswith(b"ICC_PROFILE\x00")  # not MPF: the frames it points to are gone
    if marker in (_JPEG_APP0, _JPEG_APP14):
        return True  # JFIF density and Adobe's colour transform change how the pixels decode
    return not (0xE0 <= marker <= 0xEF or marker == 0xFE)  # other APPn and COM are metadata


def _strip_webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return data
    view = memoryview(data)
    chunks: list[bytes | memoryview] = []
    dropped = False
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        end = pos + 8 + length + (length & 1)
        if end > len(data):
            return data
        if kind == b"VP8X":
            flags = data[pos + 8]
            chunks.append(
                data[pos : pos + 8] + bytes([flags & ~_WEBP_EXIF_XMP_FLAGS]) + data[pos + 9 : end]
            )
            dropped = dropped or bool(flags & _WEBP_EXIF_XMP_FLAGS)
        elif kind in _WEBP_KEPT:
            chunks.append(view[pos:end])
        else:
            dropped = True
        pos = end
    if not dropped and pos == len(data):
        return data
    body = b"".join(chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
