"""IMAGINE_PRICES: models the bot has no price for are priced by the operator, or refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cli
from bot.app import build
from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.models import ImageOptions, Usage
from bot.pricing import (
    Price,
    Prices,
    cost_from_usage,
    estimate_cost,
    parse_prices,
    price_for,
    use_prices,
)
from tests.core.test_service import request
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

MILLION = 1_000_000
REFUSAL = (
    "IMAGINE_MODEL: no price is known for 'my-model'; add it to IMAGINE_PRICES as "
    "my-model=text_in,image_in,image_out (dollars per million tokens)"
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No .env, no settings from the developer's shell, and the built-in prices afterwards."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    yield
    use_prices(Prices())


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, openai_api_key="sk-test", **values)  # type: ignore[call-arg, arg-type]


# --- reading the setting -----------------------------------------------------------------


def test_prices_are_read_with_cached_input_at_a_quarter() -> None:
    assert parse_prices(" my-model = 5, 8 ,30 ; Proxy.Model/v2=$1,0,2.5; GPT-Image-3=4,4,4;") == {
        "my-model": Price(5.0, 1.25, 8.0, 2.0, 30.0),
        "Proxy.Model/v2": Price(1.0, 0.25, 0.0, 0.0, 2.5),
        "gpt-image-3": Price(4.0, 1.0, 4.0, 1.0, 4.0),
    }


@pytest.mark.parametrize(
    "value",
    [
        "my-model",
        "my-model:5,8,30",
        "my-model=5,8",
        "my-model=5,8,30,40",
        "my-model=5,8,",
        "my-model=five,8,30",
        "my-model=5,8,nan",
        "my-model=5,-8,30",
        "my model=5,8,30",
        "=5,8,30",
        "my-model=5,8,30;my-model=1,2,3",
    ],
)
def test_a_price_list_that_cannot_be_read_stops_start_up_in_one_line(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_PRICES", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert caught.value.variable == "IMAGINE_PRICES", text
    assert "\n" not in text
    assert text.endswith("like IMAGINE_PRICES=my-model=5,8,30"), text


def test_an_empty_price_list_is_no_price_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_PRICES", "  ")
    assert load_settings().imagine_prices is None


# --- costs of a configured model ---------------------------------------------------------


async def test_a_configured_model_is_billed_and_reserved_at_its_prices(tmp_path: Path) -> None:
    configured = settings(
        imagine_model="my-model", imagine_prices="my-model=1,2,3", imagine_data_dir=tmp_path
    )
    app = await build(configured)
    await app.aclose()
    usage = Usage(
        input_tokens=3 * MILLION,
        output_tokens=MILLION,
        total_tokens=4 * MILLION,
        input_text_tokens=MILLION,
        input_image_tokens=2 * MILLION,
        cached_input_tokens=3 * MILLION // 2,
        cached_image_tokens=MILLION,
    )
    # half the text fresh at $1 and half cached at a quarter, one million image tokens fresh at $2
    # and one cached at a quarter, one million out at $3
    assert cost_from_usage("my-model", usage) == pytest.approx(0.5 + 0.125 + 2 + 0.5 + 3)
    # gpt-image-2's token formula (7024 for a high square), at this model's prices
    options = ImageOptions(model="my-model", size="1024x1024", quality="high", partial_images=0)
    assert estimate_cost(options, source_count=1, prompt_chars=30) == pytest.approx(
        (7024 * 3 + 60 * 1 + 1600 * 2) / MILLION
    )


async def test_a_job_of_a_configured_model_costs_what_its_prices_say(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_model="my-model", imagine_prices="my-model=0.5,1,2")
    result = await app.service.run(request(app.service, size="1024x1024", quality="low"))
    assert openai_fake.requests[-1].json is not None
    assert openai_fake.requests[-1].json["model"] == "my-model"
    usage = result.usage
    assert usage is not None and usage.output_tokens > 0
    text = usage.input_text_tokens or usage.input_tokens
    expected = (text * 0.5 + usage.input_image_tokens * 1 + usage.output_tokens * 2) / MILLION
    assert result.cost_usd == pytest.approx(expected, abs=1e-6)
    job = await app.store.get_job(result.job_id)
    assert job is not None and job.cost_usd == pytest.approx(expected, abs=1e-6)


async def test_snapshots_price_like_their_configured_model(tmp_path: Path) -> None:
    configured = settings(
        imagine_model="my-model-2026-01-01",
        imagine_prices="my-model=1,2,3;gpt-image-2=4,5,6",
        imagine_data_dir=tmp_path,
    )
    app = await build(configured)
    await app.aclose()
    assert price_for("my-model-2026-01-01") == Price(1.0, 0.25, 2.0, 0.5, 3.0)
    assert price_for("my-model-2026-01-01") is price_for("my-model")
    # a configured row replaces the built-in one, for its snapshots too
    assert price_for("gpt-image-2-2026-04-21") == Price(4.0, 1.0, 5.0, 1.25, 6.0)
    assert price_for("gpt-image-1") == Price(5.0, 1.25, 10.0, 2.50, 40.0)


# --- refusing a model without a price ----------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["imagine", "x"], ["edit", "x", "photo.png"], ["run"], ["run", "slack"]]
)
def test_a_model_without_a_price_stops_every_command_in_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_MODEL", "my-model")
    monkeypatch.setenv("IMAGINE_PRICES", "other-model=1,2,3")
    assert cli.main(argv) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"imagine-bot: {REFUSAL}\n"
    assert not Path("data").exists()
    # with its price the model passes, and a later check speaks (a missing key, file or token)
    monkeypatch.setenv("IMAGINE_PRICES", "other-model=1,2,3; my-model=5,8,30")
    assert cli.main(argv) == cli.EXIT_FAILED
    later = capsys.readouterr().err
    assert later.startswith("imagine-bot: ") and "IMAGINE_MODEL" not in later


def test_only_a_model_without_a_built_in_price_needs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    built_in = ["gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1", "gpt-image-1-mini"]
    for model in [*built_in, "GPT-Image-1-Mini-2025-10-06"]:
        monkeypatch.setenv("IMAGINE_MODEL", model)
        assert load_settings().imagine_model == model.lower()
    # real models of the same API that the bot has no price for
    for model in ["gpt-image-1.5", "chatgpt-image-latest"]:
        monkeypatch.setenv("IMAGINE_MODEL", model)
        with pytest.raises(ConfigError) as caught:
            load_settings()
        assert caught.value.variable == "IMAGINE_MODEL"
        assert caught.value.problem.startswith(f"no price is known for {model!r}; add it to")


async def test_settings_changed_after_loading_are_checked_when_the_app_is_built(
    tmp_path: Path,
) -> None:
    changed = settings(imagine_data_dir=tmp_path).model_copy(update={"imagine_model": "my-model"})
    with pytest.raises(ConfigError) as caught:
        await build(changed)
    assert str(caught.value) == REFUSAL
    assert not (tmp_path / "imagine.sqlite3").exists()
