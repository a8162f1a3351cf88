"""Attachment handling: what gets through, what is refused and why, what bytes come out."""

from __future__ import annotations

import io
import random
import struct
import zlib
from functools import partial

import pytest
from PIL import Image, ImageCms

from bot.errors import AttachmentRejected
from bot.images import (
    MASK_LIMIT_BYTES,
    fit_for_upload,
    normalise_source,
    prepare_mask,
    preview_jpeg,
    sniff_format,
)
from bot.models import SourceImage

MIB = 1024 * 1024
normalise = partial(normalise_source, max_bytes=25 * MIB, max_pixels=40_000_000)
mask_for = partial(prepare_mask, max_bytes=25 * MIB, max_pixels=40_000_000)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 1) -> Image.Image:
    channels = len(mode)
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * channels))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit, all-black PNG: tiny on disk, huge once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    rows_per_step = 1000
    parts = []
    for start in range(0, height, rows_per_step):
        parts.append(packer.compress(row * min(rows_per_step, height - start)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def refusal(exc: pytest.ExceptionInfo[AttachmentRejected]) -> str:
    return exc.value.user_message


# --- formats kept as they are ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "name", "mime"),
    [
        ("PNG", "RGB", "a.png", "image/png"),
        ("PNG", "RGBA", "a.png", "image/png"),
        ("JPEG", "RGB", "a.jpg", "image/jpeg"),
        ("WEBP", "RGB", "a.webp", "image/webp"),
        ("WEBP", "RGBA", "a.webp", "image/webp"),
    ],
)
def test_api_formats_are_kept_byte_for_byte(fmt: str, mode: str, name: str, mime: str) -> None:
    data = encode(noise((120, 80), mode), fmt)
    source = normalise(data, name)
    assert source.data == data
    assert (source.filename, source.mime) == (name, mime)
    assert (source.width, source.height) == (120, 80)


def test_real_format_wins_over_the_name_and_the_bytes_stay() -> None:
    data = encode(noise((50, 40)), "JPEG")
    source = normalise(data, "holiday.png")
    assert source.data == data
    assert (source.filename, source.mime) == ("holiday.jpg", "image/jpeg")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
     ("TIFF", "tiff")],
)  # fmt: skip
def test_sniff_format_reads_the_bytes(fmt: str, expected: str) -> None:
    assert sniff_format(encode(noise((10, 10)), fmt)) == expected


def test_sniff_format_knows_a_damaged_png_and_nothing_from_noise() -> None:
    damaged = encode(noise((10, 10)), "PNG")[:20]
    assert sniff_format(damaged) == "png"
    assert sniff_format(random.Random(7).randbytes(4096)) is None
    assert sniff_format(b"%PDF-1.7\n") is None


# --- formats converted --------------------------------------------------------------------------


def test_animated_gif_becomes_its_first_frame_as_png() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert decode(data).n_frames == 3  # type: ignore[attr-defined]
    source = normalise(data, "party.gif")
    assert (source.filename, source.mime, source.width, source.height) == (
        "party.png",
        "image/png",
        30,
        20,
    )
    out = decode(source.data)
    assert out.format == "PNG"
    assert getattr(out, "n_frames", 1) == 1
    assert out.convert("RGB").getpixel((15, 10)) == (255, 0, 0)


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "scan.bmp"), ("TIFF", "scan.tiff")])
def test_bmp_and_tiff_become_png_with_the_same_pixels(fmt: str, name: str) -> None:
    original = noise((64, 48))
    source = normalise(encode(original, fmt), name)
    assert (source.filename, source.mime) == ("scan.png", "image/png")
    out = decode(source.data)
    assert out.format == "PNG"
    assert out.mode == "RGB"
    assert out.tobytes() == original.tobytes()


def test_exif_orientation_is_applied_to_a_jpeg() -> None:
    im = Image.new("RGB", (64, 32), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 16, 16))  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    source = normalise(encode(im, "JPEG", exif=exif, quality=95), "phone.jpg")
    assert (source.width, source.height) == (32, 64)
    assert source.mime == "image/jpeg"
    out = decode(source.data)
    assert out.size == (32, 64)
    assert out.getexif().get(0x0112) in (None, 1)
    red, _, blue = out.getpixel((32 - 8, 8))  # type: ignore[misc]
    assert red > 200 and blue < 60
    red, _, blue = out.getpixel((8, 8))  # type: ignore[misc]
    assert red < 60 and blue > 200


def test_colour_profile_survives_the_rotation() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(noise((30, 20)), "JPEG", exif=exif, icc_profile=profile)
    source = normalise(data, "p3.jpg")
    out = decode(source.data)
    assert out.size == (20, 30)
    assert out.info.get("icc_profile") == profile


def test_exif_orientation_is_applied_to_a_png_exactly() -> None:
    im = Image.new("RGB", (6, 3), (0, 0, 255))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    source = normalise(encode(im, "PNG", exif=exif), "shot.png")
    out = decode(source.data)
    assert out.size == (3, 6) == (source.width, source.height)
    assert out.getpixel((2, 0)) == (255, 0, 0)
    assert out.getpixel((0, 0)) == (0, 0, 255)


# a damaged embedded colour profile falls back to the plain conversion, not a refusal
@pytest.mark.parametrize("profile", [{}, {"icc_profile": b"not a colour profile"}])
def test_cmyk_jpeg_becomes_an_rgb_jpeg(profile: dict[str, bytes]) -> None:
    data = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95, **profile)
    assert decode(data).mode == "CMYK"
    source = normalise(data, "print.jpg")
    assert (source.filename, source.mime) == ("print.jpg", "image/jpeg")
    out = decode(source.data)
    assert out.mode == "RGB"
    red, green, blue = out.getpixel((20, 20))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_is_scaled_to_eight_bits_not_clipped() -> None:
    data = encode(Image.new("I;16", (8, 8), 40000), "PNG")
    assert decode(data).mode.startswith("I")
    out = decode(normalise(data, "depth.png").data)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) in ((155, 155, 155), (156, 156, 156))


def test_palette_png_with_transparency_becomes_rgba() -> None:
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    source = normalise(encode(im, "PNG", transparency=0), "sticker.png")
    out = decode(source.data)
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert out.getpixel((5, 5)) == (255, 0, 0, 255)


def test_palette_png_without_transparency_becomes_rgb() -> None:
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    out = decode(normalise(encode(im, "PNG"), "flat.png").data)
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (0, 128, 0)


@pytest.mark.parametrize(("mode", "expected"), [("L", "RGB"), ("LA", "RGBA")])
def test_greyscale_png_becomes_rgb_or_rgba(mode: str, expected: str) -> None:
    data = encode(Image.new(mode, (10, 10), 90 if mode == "L" else (90, 0)), "PNG")
    out = decode(normalise(data, "grey.png").data)
    assert out.mode == expected
    assert out.getpixel((1, 1))[:3] == (90, 90, 90)  # type: ignore[index]


# --- refusals ---------------------------------------------------------------------------------


def test_pdf_is_refused_naming_what_it_is() -> None:
    data = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(200)
    with pytest.raises(AttachmentRejected) as exc:
        normalise(data, "invoice.pdf")
    assert refusal(exc) == "Can't use invoice.pdf: is a PDF document, not an image"
    assert exc.value.filename == "invoice.pdf"


def test_random_bytes_are_not_an_image_even_with_an_image_name() -> None:
    with pytest.raises(AttachmentRejected) as exc:
        normalise(random.Random(3).randbytes(10_000), "cat.png")
    assert refusal(exc) == "Can't use cat.png: is not an image file"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"PK\x03\x04" + bytes(100), "is a ZIP archive (or Office document), not an image"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(100), "is a HEIC/HEIF photo, which isn't supported"),
        (b"\x00\x00\x00\x18ftypisom" + bytes(100), "is a video, not an image"),
        (b'<?xml version="1.0"?>\n<svg xmlns="x"/>', "is an SVG drawing, which isn't supported"),
        (b"just some notes\nabout a picture\n", "is a text file, not an image"),
    ],
)
def test_common_non_images_are_named(data: bytes, says: str) -> None:
    with pytest.raises(AttachmentRejected) as exc:
        normalise(data, "upload.png")
    assert refusal(exc).startswith(f"Can't use upload.png: {says}")


def test_too_many_bytes_are_refused_before_looking_inside() -> None:
    data = bytes(int(31.2 * MIB))  # not even an image: the size check comes first
    with pytest.raises(AttachmentRejected) as exc:
        normalise(data, "huge.png")
    assert refusal(exc) == "Can't use huge.png: is 31.2 MB; the limit is 25 MB"


def test_a_file_just_over_the_limit_does_not_read_as_equal_to_it() -> None:
    with pytest.raises(AttachmentRejected) as exc:
        normalise_source(bytes(MIB + 1000), "x.png", max_bytes=MIB, max_pixels=10**6)
    assert refusal(exc) == "Can't use x.png: is 1.001 MB; the limit is 1 MB"


@pytest.mark.parametrize(
    ("side", "most_bytes", "found"),
    [
        # over the operator's limit: refused from the header, before any pixel is decoded
        (9000, 100_000, "is 9000×9000 pixels (81 megapixels)"),
        # over Pillow's own bomb guard, which fires while opening
        (30000, 1_000_000, "is about 900 megapixels"),
    ],
)
def test_too_many_pixels_are_refused_before_decoding(
    side: int, most_bytes: int, found: str
) -> None:
    bomb = png_bomb(side, side)
    assert len(bomb) < most_bytes
    with pytest.raises(AttachmentRejected) as exc:
        normalise(bomb, "big.png")
    assert refusal(exc) == f"Can't use big.png: {found}; the limit is 40 megapixels"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_files_look_damaged(fmt: str) -> None:
    data = encode(noise((200, 200)), fmt)
    with pytest.raises(AttachmentRejected) as exc:
        normalise(data[: len(data) // 2], "cut.img")
    assert refusal(exc).startswith("Can't use cut.img: looks damaged")


# --- masks -----------------------------------------------------------------------------------


@pytest.fixture
def first() -> SourceImage:
    return normalise(encode(noise((64, 64)), "PNG"), "photo.png")


def mask_image(size: tuple[int, int], hole: bool = True) -> Image.Image:
    im = Image.new("RGBA", size, (255, 255, 255, 255))
    if hole:
        im.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    return im


def test_mask_of_the_same_size_is_a_png_with_its_hole(first: SourceImage) -> None:
    mask = mask_for(encode(mask_image((64, 64)), "PNG"), "mask.png", first)
    assert (mask.filename, mask.mime, mask.width, mask.height) == ("mask.png", "image/png", 64, 64)
    out = decode(mask.data)
    assert (out.format, out.mode, out.size) == ("PNG", "RGBA", (64, 64))
    assert out.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert out.getpixel((60, 60))[3] == 255  # type: ignore[index]


def test_mask_with_the_same_shape_is_resized(first: SourceImage) -> None:
    mask = mask_for(encode(mask_image((256, 256)), "WEBP", lossless=True), "m.webp", first)
    assert mask.filename == "m.png"
    out = decode(mask.data)
    assert out.size == (64, 64) == (mask.width, mask.height)
    assert out.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert out.getpixel((60, 60))[3] == 255  # type: ignore[index]


def test_mask_of_another_shape_is_refused_naming_both_sizes(first: SourceImage) -> None:
    with pytest.raises(AttachmentRejected) as exc:
        mask_for(encode(mask_image((64, 48)), "PNG"), "mask.png", first)
    assert refusal(exc) == (
        "Can't use mask.png: is 64×48 but the image it masks is 64×64; "
        "the mask must have the same size as the image"
    )


def test_mask_without_transparency_is_refused(first: SourceImage) -> None:
    with pytest.raises(AttachmentRejected) as exc:
        mask_for(encode(Image.new("L", (64, 64), 0), "PNG"), "mask.png", first)
    assert refusal(exc) == (
        "Can't use mask.png: has no transparency; the transparent areas mark what to change"
    )


def test_mask_without_a_transparent_pixel_is_refused(first: SourceImage) -> None:
    opaque = mask_image((64, 64), hole=False)
    opaque.putpixel((1, 1), (0, 0, 0, 1))  # nearly, but not fully, transparent
    with pytest.raises(AttachmentRejected) as exc:
        mask_for(encode(opaque, "PNG"), "mask.png", first)
    assert refusal(exc).startswith("Can't use mask.png: nothing to edit: no transparent pixels")


def test_a_mask_over_four_megabytes_is_shrunk_keeping_its_alpha() -> None:
    big_first = normalise(encode(Image.new("RGB", (1600, 1600)), "PNG"), "p.png")
    busy = noise((1600, 1600), "RGBA")
    busy.putalpha(255)
    busy.paste((0, 0, 0, 0), (0, 0, 100, 100))
    data = encode(busy, "PNG")
    assert len(data) > MASK_LIMIT_BYTES
    mask = mask_for(data, "mask.png", big_first)
    assert len(mask.data) < MASK_LIMIT_BYTES
    out = decode(mask.data)
    assert out.size == (1600, 1600)
    assert out.getpixel((50, 50))[3] == 0  # type: ignore[index]
    assert out.getpixel((800, 800))[3] == 255  # type: ignore[index]


# --- fitting outputs to upload limits ------------------------------------------------------------


def test_fit_for_upload_returns_what_fits_unchanged() -> None:
    data = encode(noise((100, 100)), "PNG")
    assert fit_for_upload(data, "result.bin", 10 * MIB) == (data, "result.bin", "image/png")


def test_fit_for_upload_brings_a_big_png_under_the_limit() -> None:
    data = encode(noise((3000, 3000)), "PNG")
    assert len(data) > 10 * MIB
    out, name, mime = fit_for_upload(data, "result.png", 10 * MIB)
    assert len(out) <= 10 * MIB
    im = decode(out)
    expected = {"WEBP": ("result.webp", "image/webp"), "JPEG": ("result.jpg", "image/jpeg")}
    assert (name, mime) == expected[str(im.format)]
    assert im.size == (3000, 3000)


def test_fit_for_upload_keeps_transparency() -> None:
    im = noise((3000, 3000), "RGBA")
    im.putalpha(255)
    im.paste((0, 0, 0, 0), (0, 0, 300, 300))
    data = encode(im, "PNG")
    assert len(data) > 10 * MIB
    out, name, mime = fit_for_upload(data, "clear.png", 10 * MIB)
    assert len(out) <= 10 * MIB
    assert (name, mime) == ("clear.webp", "image/webp")
    result = decode(out)
    assert result.mode == "RGBA"
    assert result.getpixel((10, 10))[3] == 0  # type: ignore[index]
    assert result.getpixel((1500, 1500))[3] == 255  # type: ignore[index]


def test_fit_for_upload_falls_back_to_jpeg_then_to_smaller_sizes() -> None:
    data = encode(noise((1000, 1000)), "PNG")
    out, name, mime = fit_for_upload(data, "a.png", 450 * 1024)
    assert (name, mime, decode(out).format) == ("a.jpg", "image/jpeg", "JPEG")
    assert decode(out).size == (1000, 1000)
    assert len(out) <= 450 * 1024

    out, _, _ = fit_for_upload(data, "a.png", 100 * 1024)
    assert len(out) <= 100 * 1024
    width, height = decode(out).size
    assert width == height < 1000


def test_fit_for_upload_refuses_only_undecodable_data() -> None:
    with pytest.raises(AttachmentRejected) as exc:
        fit_for_upload(random.Random(5).randbytes(2000), "x.png", 1000)
    assert refusal(exc) == "Can't use x.png: is not an image file"


def test_preview_is_a_small_jpeg_on_white() -> None:
    im = Image.new("RGBA", (2000, 1000), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (1000, 0, 2000, 1000))
    out = decode(preview_jpeg(encode(im, "PNG")))
    assert (out.format, out.size) == ("JPEG", (512, 256))
    assert min(out.getpixel((50, 128))) > 240  # type: ignore[arg-type]
    red, _, blue = out.getpixel((400, 128))  # type: ignore[misc]
    assert blue > 200 and red < 40


def test_phone_mpo_photo_is_its_first_jpeg_kept_as_it_is() -> None:
    frames = [noise((40, 30), seed=1), noise((40, 30), seed=2)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert decode(data).format == "MPO"
    source = normalise(data, "IMG_0001.JPG")
    # The same compressed first frame, without the index and the frames a phone appends.
    assert decode(source.data).format == "JPEG"
    assert decode(source.data).tobytes() == decode(data).tobytes()
    assert data.startswith(source.data[:2]) and source.data[-64:] in data
    assert len(source.data) < len(data) * 0.6
    assert (source.filename, source.mime, source.width, source.height) == (
        "IMG_0001.JPG",
        "image/jpeg",
        40,
        30,
    )


def test_animated_png_becomes_its_first_frame() -> None:
    frames = [Image.new("RGBA", (20, 20), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    out = decode(normalise(data, "moving.png").data)
    assert getattr(out, "n_frames", 1) == 1
    assert out.getpixel((10, 10)) == (255, 0, 0, 255)


def test_greyscale_jpeg_becomes_an_rgb_jpeg() -> None:
    source = normalise(encode(Image.new("L", (16, 16), 120), "JPEG"), "bw.jpeg")
    out = decode(source.data)
    assert (source.filename, out.format, out.mode) == ("bw.jpeg", "JPEG", "RGB")


def test_mask_is_checked_against_a_raw_first_image_of_unknown_size() -> None:
    raw = SourceImage(encode(noise((64, 64)), "PNG"), "photo.png", mime="")
    mask = mask_for(encode(mask_image((32, 32)), "PNG"), "mask.png", raw)
    assert decode(mask.data).size == (64, 64)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unreadable_exif_does_not_cost_the_user_the_image() -> None:
    data = encode(noise((30, 20)), "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    source = normalise(data, "odd.jpg")
    assert (source.width, source.height) == (30, 20)
    assert decode(source.data).size == (30, 20)


def test_preview_of_a_large_jpeg_keeps_its_shape() -> None:
    data = encode(noise((4000, 3000)), "JPEG", quality=70)
    out = decode(preview_jpeg(data, max_side=256))
    assert (out.format, out.size) == ("JPEG", (256, 192))
