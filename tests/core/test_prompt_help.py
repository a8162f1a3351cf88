"""Prompt help: what the chat model is asked, what comes back, what it costs, how it fails."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import load_settings, parse_prompt_price
from bot.errors import ConfigError, InvalidRequest, ProviderMisconfigured, ProviderUnavailable
from bot.prompt_help import (
    MAX_OUTPUT_TOKENS,
    EmptyRewrite,
    PromptHelper,
    PromptHelpMisconfigured,
    PromptHelpUnavailable,
    is_enabled,
    system_prompt,
)
from tests.fakes.openai_client import Sleeps
from tests.fakes.openai_server import FakeOpenAI, chat_reply, chat_validator

MODEL = "gpt-4.1-mini"
PRICE = (0.40, 1.60)
PROMPT = 'a fox reading a sign that says "OPEN"'
HelperFactory = Callable[..., PromptHelper]


@pytest.fixture
async def make_helper(openai_fake: FakeOpenAI, sleeps: Sleeps) -> AsyncIterator[HelperFactory]:
    """Prompt helpers pointed at the fake, recording their waits; all closed at the end."""
    async with contextlib.AsyncExitStack() as made:

        def factory(**overrides: Any) -> PromptHelper:
            values: dict[str, Any] = {
                "api_key": openai_fake.api_key,
                "model": MODEL,
                "price": PRICE,
                "base_url": openai_fake.base_url,
                "timeout": 10.0,
                "sleep": sleeps,
            }
            helper = PromptHelper(**(values | overrides))
            made.push_async_callback(helper.aclose)
            return helper

        yield factory


@pytest.fixture
def helper(make_helper: HelperFactory) -> PromptHelper:
    """One helper with the default settings."""
    return make_helper()


def _messages(fake: FakeOpenAI, index: int = 0) -> list[dict[str, Any]]:
    body = fake.chat_requests[index].json
    assert body is not None
    messages: list[dict[str, Any]] = body["messages"]
    return messages


# --- the request and the answer ------------------------------------------------------------


async def test_the_request_names_the_model_and_carries_the_prompt_and_the_guidance(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    await helper.enhance(PROMPT)
    [rec] = openai_fake.chat_requests
    assert rec.status == 200 and rec.problems == []
    assert rec.json is not None
    assert rec.json["model"] == MODEL
    assert rec.json["max_completion_tokens"] == MAX_OUTPUT_TOKENS
    system, user = _messages(openai_fake)
    assert user == {"role": "user", "content": PROMPT}
    assert system["role"] == "system"
    guidance = system["content"]
    for asked in ("gpt-image-2", "subject", "composition", "style", "lighting", "palette"):
        assert asked in guidance
    assert "exact words in double quotes" in guidance and "font hint" in guidance
    assert "Keep the user's intent" in guidance
    assert "rewritten prompt only" in guidance and "1000 characters" in guidance
    assert "safety system" not in guidance
    assert rec.headers["authorization"] == f"Bearer {openai_fake.api_key}"


async def test_the_rewrite_comes_back_as_the_new_prompt(helper: PromptHelper) -> None:
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.prompt == chat_reply(PROMPT)


async def test_the_cost_is_the_reported_usage_at_the_configured_price(
    openai_fake: FakeOpenAI, make_helper: HelperFactory
) -> None:
    helper = make_helper(price=(2.0, 8.0))
    enhanced = await helper.enhance(PROMPT)
    answer = openai_fake.chat_requests[0].answer
    assert answer is not None
    reported = answer["usage"]
    assert enhanced.usage.prompt_tokens == reported["prompt_tokens"] > 0
    assert enhanced.usage.completion_tokens == reported["completion_tokens"] > 0
    assert not enhanced.usage.estimated
    expected = (reported["prompt_tokens"] * 2.0 + reported["completion_tokens"] * 8.0) / 1e6
    assert enhanced.cost_usd == pytest.approx(expected)


async def test_after_a_block_the_guidance_also_asks_to_drop_what_would_be_refused(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    await helper.enhance(PROMPT)
    await helper.enhance(PROMPT, after_block=True)
    plain = _messages(openai_fake, 0)[0]["content"]
    after = _messages(openai_fake, 1)[0]["content"]
    assert after.startswith(plain)
    added = after.removeprefix(plain)
    assert "safety system" in added and "Keep its intent" in added
    assert "Never add anything" in added
    assert _messages(openai_fake, 1)[1] == {"role": "user", "content": PROMPT}
    assert system_prompt(after_block=True) == after


async def test_a_safety_identifier_is_passed_on_when_given(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    await helper.enhance(PROMPT, safety_identifier="u-5f3a")
    await helper.enhance(PROMPT)
    first, second = (rec.json or {} for rec in openai_fake.chat_requests)
    assert first["safety_identifier"] == "u-5f3a"
    assert "safety_identifier" not in second


async def test_a_blank_prompt_is_refused_without_asking(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    with pytest.raises(InvalidRequest):
        await helper.enhance("   ")
    assert openai_fake.chat_requests == []


# --- failures ------------------------------------------------------------------------------


async def test_a_server_error_that_persists_is_unavailable_after_the_retries(
    openai_fake: FakeOpenAI, helper: PromptHelper, sleeps: Sleeps
) -> None:
    openai_fake.fail_next_chat("server_error", times=3)
    with pytest.raises(ProviderUnavailable) as caught:
        await helper.enhance(PROMPT)
    assert isinstance(caught.value, PromptHelpUnavailable)
    assert len(openai_fake.chat_requests) == 3 and len(sleeps.waits) == 2
    assert "HTTP 500" in caught.value.detail
    assert caught.value.user_message.startswith("Prompt help is unavailable")


async def test_one_server_error_is_retried_and_the_rewrite_still_arrives(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next_chat("server_error")
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.prompt == chat_reply(PROMPT)
    assert [r.status for r in openai_fake.chat_requests] == [500, 200]


async def test_a_rate_limit_waits_as_long_as_the_server_asks(
    openai_fake: FakeOpenAI, helper: PromptHelper, sleeps: Sleeps
) -> None:
    openai_fake.fail_next_chat("rate_limit", retry_after=3)
    await helper.enhance(PROMPT)
    assert sleeps.waits == [3.0]


async def test_no_answer_in_time_is_retried(
    openai_fake: FakeOpenAI, make_helper: HelperFactory
) -> None:
    helper = make_helper(timeout=0.2)
    openai_fake.fail_next_chat("timeout")
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.prompt == chat_reply(PROMPT)
    assert len(openai_fake.chat_requests) == 2


@pytest.mark.allow_error_logs
async def test_a_wrong_key_is_a_configuration_problem_not_retried(
    openai_fake: FakeOpenAI, make_helper: HelperFactory
) -> None:
    helper = make_helper(api_key="sk-wrong-key-0123456789")
    with pytest.raises(ProviderMisconfigured) as caught:
        await helper.enhance(PROMPT)
    assert isinstance(caught.value, PromptHelpMisconfigured)
    assert [r.status for r in openai_fake.chat_requests] == [401]
    assert "OPENAI_API_KEY" in caught.value.detail
    assert "sk-wrong-key-0123456789" not in caught.value.detail
    assert "Please tell the bot's operator" in caught.value.user_message


@pytest.mark.allow_error_logs
async def test_no_permission_is_a_configuration_problem(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next_chat("permission_denied")
    with pytest.raises(ProviderMisconfigured):
        await helper.enhance(PROMPT)
    assert len(openai_fake.chat_requests) == 1


@pytest.mark.allow_error_logs
async def test_an_unknown_model_names_the_setting_to_fix(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next_chat("model_not_found")
    with pytest.raises(PromptHelpMisconfigured) as caught:
        await helper.enhance(PROMPT)
    assert f"IMAGINE_PROMPT_MODEL={MODEL}" in caught.value.detail
    assert "does not exist" in caught.value.detail
    assert len(openai_fake.chat_requests) == 1


async def test_a_broken_answer_is_unavailable_and_not_retried(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next_chat("malformed_json")
    with pytest.raises(PromptHelpUnavailable) as caught:
        await helper.enhance(PROMPT)
    assert "not valid JSON" in caught.value.detail
    assert len(openai_fake.chat_requests) == 1


@pytest.mark.parametrize(("fault", "reason"), [("empty_content", "empty"), ("refusal", "refused")])
async def test_an_answer_without_a_prompt_is_a_clear_error_that_keeps_its_cost(
    openai_fake: FakeOpenAI, helper: PromptHelper, fault: str, reason: str
) -> None:
    openai_fake.fail_next_chat(fault)
    with pytest.raises(EmptyRewrite) as caught:
        await helper.enhance(PROMPT)
    assert isinstance(caught.value, ProviderUnavailable)
    assert caught.value.reason == reason
    assert "without a new prompt" in caught.value.user_message
    answer = openai_fake.chat_requests[0].answer
    assert answer is not None
    assert caught.value.usage.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert caught.value.cost_usd == pytest.approx(helper.cost(caught.value.usage))
    assert caught.value.cost_usd > 0
    assert len(openai_fake.chat_requests) == 1


async def test_an_answer_without_usage_is_priced_from_the_text(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next_chat("no_usage")
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.prompt == chat_reply(PROMPT)
    assert enhanced.usage.estimated
    assert enhanced.usage.completion_tokens >= math.ceil(len(enhanced.prompt) / 4)
    assert enhanced.cost_usd == pytest.approx(helper.cost(enhanced.usage)) and enhanced.cost_usd > 0


# --- the estimate and the settings ---------------------------------------------------------


async def test_the_estimate_covers_the_system_prompt_and_the_whole_output_cap(
    helper: PromptHelper,
) -> None:
    estimate = helper.estimate_cost(PROMPT)
    tokens_in = math.ceil(len(system_prompt()) / 4) + math.ceil(len(PROMPT) / 4)
    assert estimate >= (tokens_in * PRICE[0] + MAX_OUTPUT_TOKENS * PRICE[1]) / 1e6
    assert helper.estimate_cost(PROMPT, after_block=True) > estimate
    assert helper.estimate_cost(PROMPT * 10) > estimate
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.cost_usd < estimate


async def test_from_settings_uses_the_openai_settings_and_the_prompt_price(
    openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sleeps: Sleeps
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        openai_api_key=openai_fake.api_key,
        openai_base_url=openai_fake.base_url,
        openai_org_id="org-123",
        openai_project_id="proj_456",
        imagine_prompt_model="gpt-4.1-nano",
        imagine_prompt_price="0.10,0.40",
    )
    assert is_enabled(settings)
    helper = PromptHelper.from_settings(settings, sleep=sleeps)
    try:
        enhanced = await helper.enhance(PROMPT)
    finally:
        await helper.aclose()
    [rec] = openai_fake.chat_requests
    assert rec.json is not None and rec.json["model"] == "gpt-4.1-nano"
    assert rec.headers["openai-organization"] == "org-123"
    assert rec.headers["openai-project"] == "proj_456"
    usage = enhanced.usage
    expected = (usage.prompt_tokens * 0.10 + usage.completion_tokens * 0.40) / 1e6
    assert enhanced.cost_usd == pytest.approx(expected)


def test_prompt_help_is_off_without_a_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    # "IMAGINE_PROMPT_MODEL=" left empty in .env means off, as does no line at all
    (tmp_path / ".env").write_text("IMAGINE_PROMPT_MODEL=\nIMAGINE_PROMPT_PRICE=\n")
    settings = load_settings()
    assert settings.imagine_prompt_model is None
    assert not is_enabled(settings)
    with pytest.raises(ConfigError) as caught:
        PromptHelper.from_settings(settings)
    assert caught.value.variable == "IMAGINE_PROMPT_MODEL"


def test_a_model_without_a_price_stops_start_up_naming_the_price(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGINE_PROMPT_MODEL", "gpt-4.1-mini")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("IMAGINE_PROMPT_PRICE: ")
    assert "IMAGINE_PROMPT_PRICE=0.40,1.60" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.40,1.60", (0.40, 1.60)), (" $0.1 , 0.4 ", (0.1, 0.4)), ("0,0", (0.0, 0.0))],
)
def test_the_price_is_two_numbers_input_then_output(
    text: str, expected: tuple[float, float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_prompt_price(text) == expected
    settings = load_settings(imagine_prompt_model=MODEL, imagine_prompt_price=text)
    assert settings.imagine_prompt_price == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0.40", "write two prices, input then output"),
        ("0.40,1.60,2", "write two prices"),
        ("cheap,1.60", "can't read 'cheap,1.60'"),
        ("nan,1", "can't read"),
        ("-0.40,1.60", "below zero"),
    ],
)
def test_a_bad_price_stops_start_up_in_one_line(
    text: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGINE_PROMPT_PRICE", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(imagine_prompt_model=MODEL)
    assert str(caught.value).startswith("IMAGINE_PROMPT_PRICE: ")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_model_name_with_a_space_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(imagine_prompt_model="gpt 4.1 mini", imagine_prompt_price="0.4,1.6")
    assert caught.value.variable == "IMAGINE_PROMPT_MODEL"


# --- the fake's contract check -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": MODEL}, "'messages' is a required property"),
        ({"model": MODEL, "messages": []}, "should be non-empty"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "schema: messages/0"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is a required property"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "prompt": "x"},
            "Unrecognized request argument supplied: prompt",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "max_completion_tokens": "many",
            },
            "schema: max_completion_tokens",
        ),
    ],
)
async def test_the_fake_refuses_a_request_that_breaks_the_published_schema(
    openai_fake: FakeOpenAI, body: dict[str, Any], problem: str
) -> None:
    openai_fake.expect_invalid = True
    headers = {"Authorization": f"Bearer {openai_fake.api_key}"}
    async with httpx.AsyncClient(base_url=openai_fake.base_url + "/", headers=headers) as client:
        response = await client.post("chat/completions", json=body)
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]
    assert any(problem in p for p in openai_fake.chat_requests[0].problems)


async def test_the_fakes_answer_matches_the_published_response_schema(
    openai_fake: FakeOpenAI,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"Authorization": f"Bearer {openai_fake.api_key}"}
    async with httpx.AsyncClient(base_url=openai_fake.base_url + "/", headers=headers) as client:
        response = await client.post("chat/completions", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert list(chat_validator("CreateChatCompletionResponse").iter_errors(answer)) == []
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == chat_reply(PROMPT)


async def test_image_faults_and_chat_faults_wait_for_their_own_endpoint(
    openai_fake: FakeOpenAI, helper: PromptHelper
) -> None:
    openai_fake.fail_next("server_error")
    enhanced = await helper.enhance(PROMPT)
    assert enhanced.prompt == chat_reply(PROMPT)
    assert [r.fault for r in openai_fake.chat_requests] == [None]
    with pytest.raises(ValueError, match="unknown chat fault"):
        openai_fake.fail_next_chat("bad_image")
    with pytest.raises(ValueError, match="unknown fault"):
        openai_fake.fail_next("empty_content")


# --- metrics -------------------------------------------------------------------------------


async def test_each_call_is_counted_by_its_outcome(
    openai_fake: FakeOpenAI, helper: PromptHelper, sleeps: Sleeps
) -> None:
    from bot import metrics

    def count(outcome: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "imagine_prompt_help_calls_total", {"outcome": outcome}
        )
        return value or 0.0

    ok, unavailable = count("ok"), count("PromptHelpUnavailable")
    await helper.enhance(PROMPT)
    openai_fake.fail_next_chat("server_error", times=3)
    with pytest.raises(PromptHelpUnavailable):
        await helper.enhance(PROMPT)
    with pytest.raises(InvalidRequest):
        await helper.enhance("   ")  # refused before any call: not counted
    assert count("ok") - ok == 1
    assert count("PromptHelpUnavailable") - unavailable == 1
