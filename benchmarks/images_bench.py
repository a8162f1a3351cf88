"""Time and peak memory of bot.images on large inputs; one line per case.

The input bytes are built once here and handed to a fresh process per case through a file, so
each peak RSS is the work's own (Pillow allocates outside tracemalloc's view). "+N MB" is the
growth of peak RSS over the process holding the input bytes. The "16 ×" cases are one edit's
worst case: sixteen inputs normalised at once through ``asyncio.to_thread``, as the service does,
all sharing the process-wide decode budget (its size is printed first).
Run: ``.venv/bin/python benchmarks/images_bench.py [WORD ...]`` (only cases naming a WORD).
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import multiprocessing.forkserver
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bot.image_budget import decode_budget
from bot.images import fit_for_upload, normalise_source, preview_jpeg

MIB = 1024 * 1024
LIMITS = {"max_bytes": 50 * MIB, "max_pixels": 40_000_000}
SOURCES = 16  # the most images one edit may carry


def _sixteen(data: bytes, name: str) -> object:
    """Normalise ``SOURCES`` copies at once, one thread each, like one edit of 16 images."""

    async def run() -> list[object]:
        calls = (
            asyncio.to_thread(normalise_source, data, f"{i}-{name}", **LIMITS)
            for i in range(SOURCES)
        )
        return await asyncio.gather(*calls)

    return asyncio.run(run())


CASES: dict[str, Callable[[bytes], object]] = {
    "normalise 40 MP JPEG, orientation 6": lambda d: normalise_source(d, "a.jpg", **LIMITS),
    "normalise 40 MP JPEG, kept as is": lambda d: normalise_source(d, "a.jpg", **LIMITS),
    "normalise 12 MP BMP -> PNG": lambda d: normalise_source(d, "a.bmp", **LIMITS),
    "fit 8 MP PNG under 2 MiB": lambda d: fit_for_upload(d, "a.png", 2 * MIB),
    "preview 8 MP PNG": preview_jpeg,
    "16 × normalise 40 MP JPEG, orientation 6": lambda d: _sixteen(d, "a.jpg"),
    "16 × normalise 40 MP PNG, kept as is": lambda d: _sixteen(d, "a.png"),
}


def _photo(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients plus light grain: compresses like a photo, unlike pure noise."""
    width, height = size
    ramp = Image.linear_gradient("L").resize(size)
    grain = Image.frombytes("L", size, random.Random(1).randbytes(width * height))
    grain = grain.point(lambda v: v // 16)
    return Image.merge("RGB", (ramp, grain, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _inputs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    big = _photo((7744, 5164))
    rotated = _encode(big, "JPEG", quality=92, exif=exif)
    plain = _encode(big, "JPEG", quality=92)
    del big
    bmp = _encode(_photo((4000, 3000)), "BMP")
    png = _encode(_photo((3840, 2160)), "PNG")
    big_png = _encode(_photo((7744, 5164)), "PNG", compress_level=1)
    inputs = (rotated, plain, bmp, png, png, rotated, big_png)
    return dict(zip(CASES, inputs, strict=True))


def _measure(name: str, path: str, out: multiprocessing.Queue[tuple[float, float]]) -> None:
    data = Path(path).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    CASES[name](data)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put((elapsed, max(0, peak - before) / 1024))  # ru_maxrss is in KiB on Linux


def main() -> None:
    """Run every case in its own process and print the figures."""
    # Linux carries ru_maxrss across fork and exec, so children must come from a process started
    # before the inputs were built: a fork server launched first.
    context = multiprocessing.get_context("forkserver")
    multiprocessing.forkserver.ensure_running()
    print(f"decode budget: {decode_budget.capacity / MIB:.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in _inputs().items():
            if sys.argv[1:] and not any(word in name for word in sys.argv[1:]):
                continue
            path = Path(tmp) / "input"
            path.write_bytes(data)
            queue: multiprocessing.Queue[tuple[float, float]] = context.Queue()
            process = context.Process(target=_measure, args=(name, str(path), queue))
            process.start()
            elapsed, extra_mb = queue.get(timeout=600)
            process.join()
            size = len(data) / MIB
            print(f"{name} ({size:.1f} MiB in): {elapsed:.2f} s, +{extra_mb:.0f} MB peak RSS")


if __name__ == "__main__":
    main()
