"""Reading /imagine options and Slack markup; which hosts files may come from."""

from __future__ import annotations

import pytest

from adapters.slack.files import allowed_hosts, remote_file
from adapters.slack.text import FlagError, clean_prompt, escape, parse_prompt
from bot.commands import Overrides, split_mask
from bot.texts import shorten


def test_flags_anywhere_in_the_prompt() -> None:
    parsed = parse_prompt("--n 2 a fox in snow --size 1536X1024 --quality HIGH --format jpg")
    assert parsed.prompt == "a fox in snow"
    assert parsed.overrides == Overrides(
        n=2, size="1536x1024", quality="high", output_format="jpeg"
    )
    assert parsed.overrides.background is None


def test_dashes_slack_autocorrects_and_equals_and_words() -> None:
    parsed = parse_prompt("a logo \u2014transparent \u2014size=landscape -q low")
    assert parsed.prompt == "a logo"
    assert parsed.overrides == Overrides(background="transparent", size="1536x1024", quality="low")
    assert parse_prompt("a cat --size 1024×1024").overrides.size == "1024x1024"


def test_words_that_only_look_like_flags_stay_in_the_prompt() -> None:
    assert parse_prompt("a well-lit room - night -ish").prompt == "a well-lit room - night -ish"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a cat --style anime", "--style"),
        ("a cat --quality ultra", "--quality ultra"),
        ("a cat --n two", "--n two"),
        ("a cat --n 0", "--n 0"),
        ("a cat --size big", "--size big"),
        ("a cat --format gif", "--format gif"),
        ("a cat --size", "needs a value"),
        ("a cat --transparent=no", "takes no value"),
    ],
)
def test_bad_flags_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(FlagError) as raised:
        parse_prompt(text)
    assert says in str(raised.value)


def test_clean_prompt_turns_markup_into_words() -> None:
    text = "<@UBOT> draw <@U2|bob> at <#C1|general> &amp; <https://x.test/a|this> &lt;3 <!here>"
    assert clean_prompt(text, "UBOT") == "draw @bob at #general & this <3"


def test_escape_and_shorten_for_display() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    long = "word " * 100
    short = shorten(long, 30)
    assert len(short) <= 30 and short.endswith("…")


def test_file_hosts_follow_the_api_url() -> None:
    assert "files.slack.com" in allowed_hosts("https://slack.com/api/")
    gov = allowed_hosts("https://slack-gov.com/api/")
    assert {"slack-gov.com", "files.slack-gov.com"} <= gov
    assert "evil.example.com" not in gov
    assert "127.0.0.1" in allowed_hosts("http://127.0.0.1:9/api/")


def test_mask_is_named_mask() -> None:
    cat, mask = remote_file({"name": "cat.png"}), remote_file({"name": "Mask-1.png"})
    assert split_mask([cat, mask]) == ((cat,), mask)
    assert split_mask([cat]) == ((cat,), None)
