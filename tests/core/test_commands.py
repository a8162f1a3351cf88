"""Commands as values: option overrides, which file is the mask, what counts as an image."""

from __future__ import annotations

from bot.commands import (
    NO_OVERRIDES,
    Edit,
    Generate,
    Overrides,
    Regenerate,
    RemoteFile,
    is_image,
    prompt_of,
    split_mask,
)
from bot.models import ImageOptions, Requester

ANN = Requester("discord", "1")
BASE = ImageOptions(
    model="gpt-image-2",
    size="1024x1024",
    quality="medium",
    n=2,
    background="opaque",
    output_format="jpeg",
    output_compression=80,
    partial_images=1,
)


def file(name: str, content_type: str | None = None) -> RemoteFile:
    return RemoteFile(f"https://files.example/{name}", name, 10, content_type)


def test_no_overrides_keep_every_default() -> None:
    assert NO_OVERRIDES.apply(BASE) == BASE
    assert NO_OVERRIDES.chosen() == {}


def test_each_chosen_value_replaces_only_its_own_option() -> None:
    chosen = Overrides(
        size="1536x1024",
        quality="high",
        n=1,
        background="transparent",
        output_format="png",
        output_compression=0,
        partial_images=0,
    )
    applied = chosen.apply(BASE)
    assert applied == ImageOptions(
        model="gpt-image-2",
        size="1536x1024",
        quality="high",
        n=1,
        background="transparent",
        output_format="png",
        output_compression=0,  # a chosen 0 is a choice, not "unset"
        partial_images=0,
    )
    assert applied.moderation == BASE.moderation


def test_one_override_leaves_the_rest() -> None:
    assert Overrides(quality="low").apply(BASE) == ImageOptions(
        model="gpt-image-2",
        size="1024x1024",
        quality="low",
        n=2,
        background="opaque",
        output_format="jpeg",
        output_compression=80,
        partial_images=1,
    )
    assert Overrides(quality="low", n=3).chosen() == {"quality": "low", "n": 3}
    assert Overrides(output_compression=0).chosen() == {"output_compression": 0}


def test_split_mask_takes_the_first_file_named_mask_and_keeps_the_order() -> None:
    a, mask, b, mask2 = file("a.png"), file("Mask.PNG"), file("b.jpg"), file("mask-2.png")
    images, found = split_mask([a, mask, b, mask2])
    assert found == mask
    assert images == (a, b, mask2)


def test_split_mask_without_a_mask() -> None:
    a, b = file("a.png"), file("b.webp")
    assert split_mask([a, b]) == ((a, b), None)
    assert split_mask([]) == ((), None)


def test_split_mask_leaves_out_files_that_are_not_images_unless_asked_to_keep_them() -> None:
    photo, notes, mask = file("photo.png"), file("notes.txt", "text/plain"), file("mask.png")
    assert split_mask([photo, notes, mask]) == ((photo,), mask)
    assert split_mask([photo, notes, mask], images_only=False) == ((photo, notes), mask)


def test_is_image_trusts_the_type_before_the_name() -> None:
    assert is_image(file("photo.PNG"))
    assert is_image(file("photo.jpeg"))
    assert not is_image(file("photo.txt"))
    assert is_image(file("no-suffix", "image/webp"))
    assert is_image(file("x", "IMAGE/PNG"))
    assert not is_image(file("photo.png", "application/pdf"))


def test_prompt_of_each_command() -> None:
    assert prompt_of(Generate(ANN, "a kite")) == "a kite"
    assert prompt_of(Edit(ANN, "make it red", job_id="j1")) == "make it red"
    assert prompt_of(Regenerate(ANN, "j1")) == ""
