"""The gpt-image rules a request must meet before it is paid for: sizes, options, inputs."""

from __future__ import annotations

import pytest

from bot.errors import InvalidRequest, InvalidSize
from bot.image_rules import MAX_SOURCES, check_options
from bot.models import ImageOptions, ImageRequest, SourceImage
from bot.sizes import check_size
from tests.fakes.openai_client import ALICE, request, source


@pytest.mark.parametrize(
    ("size", "words", "suggestion"),
    [
        ("1000x1000", "divisible by 16", "992x992"),
        ("3072x768", "3 times", None),
        ("4096x2304", "3840", None),
        ("640x640", "at least 655,360", None),
        ("3840x2560", "at most 8,294,400", None),
        ("big", "Can't read", None),
    ],
)
def test_custom_size_rules(size: str, words: str, suggestion: str | None) -> None:
    with pytest.raises(InvalidSize) as caught:
        check_size("gpt-image-2", size)
    message = caught.value.user_message
    assert words in message
    if size != "big":
        suggested = message.rsplit("Try ", 1)[1].rstrip(".")
        check_size("gpt-image-2", suggested)  # the suggestion itself must work
        if suggestion:
            assert suggested == suggestion


@pytest.mark.parametrize("size", ["auto", "1024x1024", "1536x1024", "2048x1152", "3840x2160"])
def test_sizes_that_work(size: str) -> None:
    check_size("gpt-image-2", size)


def test_older_models_only_take_the_standard_sizes() -> None:
    check_size("gpt-image-1", "1024x1536")
    with pytest.raises(InvalidSize, match="custom sizes need gpt-image-2"):
        check_size("gpt-image-1", "2048x1152")


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (request("   "), "prompt"),
        (request("x" * 32001), "prompt"),
        (request(n=0), "n"),
        (request(n=11), "n"),
        (request(partial_images=4), "partial_images"),
        (request(background="transparent", output_format="jpeg"), "background"),
        (request(output_compression=50), "output_compression"),
        (request(output_format="webp", output_compression=101), "output_compression"),
        (request(quality="ultra"), "quality"),
        (request(size="1000x1000"), "size"),
        (
            ImageRequest(ALICE, "x", ImageOptions(), tuple(source(f"{i}.png") for i in range(17))),
            "image",
        ),
    ],
)
def test_check_options_refuses(req: ImageRequest, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_options(req)
    assert caught.value.param == param
    assert caught.value.user_message


def test_check_options_accepts_a_full_request() -> None:
    check_options(
        request(
            n=10,
            partial_images=3,
            output_format="webp",
            output_compression=0,
            background="transparent",
            size="2048x1152",
            prompt="x" * 32000,
        )
    )


def refusal(req: ImageRequest, **kw: int) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_options(req, **kw)
    return caught.value


def test_too_many_sources_are_counted_in_the_refusal() -> None:
    sources = tuple(source(f"{i}.png") for i in range(MAX_SOURCES + 1))
    check_options(ImageRequest(ALICE, "x", ImageOptions(), sources[:MAX_SOURCES]))
    error = refusal(ImageRequest(ALICE, "x", ImageOptions(), sources))
    assert error.param == "image"
    assert error.user_message == "You attached 17 images; at most 16 can be edited together."


def test_a_mask_needs_an_image() -> None:
    mask = SourceImage(b"mask", "mask.png", "image/png")
    error = refusal(ImageRequest(ALICE, "x", ImageOptions(), mask=mask))
    assert (error.param, error.user_message) == ("mask", "A mask needs an image to apply to.")
    check_options(ImageRequest(ALICE, "x", ImageOptions(), (source("a.png"),), mask))


def test_the_operators_cap_on_images_is_named() -> None:
    assert refusal(request(n=5), max_images=4).user_message == (
        "You can ask for 1 to 4 images at once."
    )
    assert refusal(request(n=2), max_images=1).user_message == "You can ask for 1 image at once."
    check_options(request(n=4), max_images=4)
    # The API's own cap holds whatever the operator set.
    assert refusal(request(n=11), max_images=50).user_message == (
        "You can ask for 1 to 10 images at once."
    )


def test_an_empty_prompt_is_refused_before_its_options() -> None:
    error = refusal(request("   ", n=0))
    assert (error.param, error.user_message) == ("prompt", "Please describe the image you want.")
