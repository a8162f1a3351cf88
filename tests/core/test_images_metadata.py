"""What is sent carries pixels, not metadata; deep colour is converted; metadata bombs are named."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from functools import partial

import pytest
from PIL import Image, PngImagePlugin

from bot.errors import AttachmentRejected
from bot.images import normalise_source

MIB = 1024 * 1024
normalise = partial(normalise_source, max_bytes=50 * MIB, max_pixels=40_000_000)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def sixteen_bit_png(colour_type: int, pixel: tuple[int, ...], size: int = 6) -> bytes:
    """A PNG with 16 bits per channel (colour type 2 = RGB, 6 = RGBA)."""
    row = b"\x00" + struct.pack(f">{len(pixel)}H", *pixel) * size
    header = struct.pack(">IIBBBBB", size, size, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        return im.tobytes()


def photo(mode: str = "RGB") -> Image.Image:
    return Image.linear_gradient("L").resize((64, 48)).convert(mode)


# --- deep colour ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour_type", "pixel", "mode", "expected"),
    [
        (2, (40000, 1000, 65535), "RGB", (156, 3, 255)),
        (6, (40000, 1000, 65535, 30000), "RGBA", (156, 3, 255, 117)),
    ],
)
def test_sixteen_bit_colour_png_goes_out_as_eight_bit(
    colour_type: int, pixel: tuple[int, ...], mode: str, expected: tuple[int, ...]
) -> None:
    source = normalise(sixteen_bit_png(colour_type, pixel), "scan.png")
    assert source.data[24] == 8  # IHDR bit depth of what the API receives
    with Image.open(io.BytesIO(source.data)) as out:
        assert (out.format, out.mode, out.size) == ("PNG", mode, (6, 6))
        assert out.getpixel((3, 3)) == expected
    assert (source.filename, source.mime) == ("scan.png", "image/png")


# --- metadata -------------------------------------------------------------------------------


def test_png_text_chunk_of_twenty_megabytes_is_not_sent() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "x" * (20 * MIB))
    info.add_text("Author", "someone", zip=True)
    info.add_itxt("Comment", "ünïcode")
    data = encode(photo(), "PNG", pnginfo=info)
    source = normalise(data, "notes.png")
    assert len(source.data) < 100_000
    assert png_chunks(source.data) == [b"IHDR", b"IDAT", b"IEND"]
    assert pixels(source.data) == pixels(data)


def test_png_exif_and_time_are_dropped_but_gamma_stays() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # camera make: metadata, not pixels
    exif[0x0112] = 1  # upright already: the pixels go out untouched
    data = encode(photo("RGBA"), "PNG", exif=exif)
    gamma = chunk(b"gAMA", struct.pack(">I", 45455))
    data = data[:33] + gamma + data[33:-12] + chunk(b"tIME", b"\x07\xe8\x01\x01\0\0\0") + data[-12:]
    assert {b"eXIf", b"tIME", b"gAMA"} <= set(png_chunks(data))
    source = normalise(data, "sticker.png")
    assert png_chunks(source.data) == [b"IHDR", b"gAMA", b"IDAT", b"IEND"]
    assert pixels(source.data) == pixels(data)


def test_jpeg_exif_and_comment_are_dropped_losslessly() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 1  # upright already: the pixels go out untouched
    gps = exif.get_ifd(0x8825)
    gps[2] = (51.0, 30.0, 0.0)
    data = encode(photo(), "JPEG", exif=exif, comment=b"taken at home", quality=90)
    source = normalise(data, "IMG_1.jpg")
    assert b"Exif\x00\x00" not in source.data and b"taken at home" not in source.data
    assert b"PhoneMaker" not in source.data
    assert pixels(source.data) == pixels(data)
    assert len(data) - len(source.data) > 50


def test_jpeg_colour_profile_stays_when_exif_goes() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    data = encode(photo(), "JPEG", exif=exif, icc_profile=icc)
    source = normalise(data, "p3.jpg")
    with Image.open(io.BytesIO(source.data)) as out:
        assert out.info.get("icc_profile") == icc
        assert not out.getexif()


def test_webp_exif_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    data = encode(photo(), "WEBP", exif=exif, lossless=True)
    assert b"EXIF" in data
    source = normalise(data, "a.webp")
    assert b"EXIF" not in source.data and b"PhoneMaker" not in source.data
    assert pixels(source.data) == pixels(data)
    assert source.mime == "image/webp"


# --- compressed-text bombs ------------------------------------------------------------------


def ztxt_bomb(after_pixels: bool) -> bytes:
    body = b"Comment\x00\x00" + zlib.compress(b"a" * (20 * MIB), 9)
    data = encode(photo(), "PNG")
    at = len(data) - 12 if after_pixels else 33  # before IEND, or right after IHDR
    return data[:at] + chunk(b"zTXt", body) + data[at:]


@pytest.mark.parametrize("after_pixels", [False, True])
def test_compressed_text_bomb_is_called_too_large_inside(after_pixels: bool) -> None:
    data = ztxt_bomb(after_pixels)
    assert len(data) < 100_000
    with pytest.raises(AttachmentRejected) as exc:
        normalise(data, "bomb.png")
    message = exc.value.user_message
    assert "too large inside" in message
    assert "damaged" not in message


# --- Pillow's warning -----------------------------------------------------------------------


def test_decompression_bomb_warning_never_reaches_stderr() -> None:
    # A fresh interpreter with Python's default warning filters, as the CLI and the bot run.
    script = textwrap.dedent(
        """
        import struct, zlib
        from bot.errors import AttachmentRejected
        from bot.images import normalise_source, sniff_format

        def chunk(kind, body):
            crc = struct.pack(">I", zlib.crc32(kind + body))
            return struct.pack(">I", len(body)) + kind + body + crc

        width = height = 10_000  # 100 MP: over Pillow's 89 MP warning, under its 179 MP error
        row = b"\\x00" * (1 + (width + 7) // 8)
        ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
        data = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))
        print(sniff_format(data))
        try:
            normalise_source(data, "huge.png", max_bytes=1 << 26, max_pixels=40_000_000)
        except AttachmentRejected as exc:
            print(exc.user_message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "png",
        "Can't use huge.png: is 10000×10000 pixels (100 megapixels); the limit is 40 megapixels",
    ]
