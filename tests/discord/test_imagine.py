"""/imagine end to end: the real discord.py against the fake Discord and the fake OpenAI."""

from __future__ import annotations

import asyncio
import io
import re

from PIL import Image

from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    Call,
    FakeDiscord,
    ProviderGate,
    edit_inputs,
    job_of,
    png,
)
from tests.fakes.openai_server import FakeOpenAI


async def test_imagine_defers_then_shows_the_result_with_embed_and_buttons(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    it = await discord_fake.slash(discord_fake.alice, prompt="a lighthouse in fog, watercolor")
    message = await discord_fake.result_of(it)

    assert it.callback_type == 5  # deferred ("thinking"), public
    assert not message["flags"] & EPHEMERAL
    [attachment] = message["attachments"]
    assert attachment["content_type"] == "image/png"
    Image.open(io.BytesIO(discord_fake.cdn_bytes(attachment))).verify()
    [embed] = message["embeds"]
    assert embed["description"] == "a lighthouse in fog, watercolor"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Size"] == "1024x1024"
    assert fields["Cost"].startswith("$")
    assert fields["Time"].endswith(" s")
    assert fields["Requested by"] == f"<@{discord_fake.alice.id}>"
    job_id = job_of(message)
    buttons = [b["custom_id"] for row in message["components"] for b in row["components"]]
    assert buttons == [
        f"imagine:regen:{job_id}",
        f"imagine:vary:{job_id}",
        f"imagine:edit:{job_id}",
        f"imagine:delete:{job_id}",
    ]

    job = await app.store.job_for_message("discord", message["id"])
    assert job is not None and job.id == job_id and job.status == "succeeded"
    assert job.platform_ref["interaction_token"] == it.token
    assert job.platform_ref["message_id"] == message["id"]
    [sent] = openai_fake.requests
    assert sent.path == "/v1/images/generations"
    assert sent.json["prompt"] == "a lighthouse in fog, watercolor"
    # The user saw the queue before the result.
    contents = [e.get("content") or "" for e in discord_fake.webhook_edits(it)]
    shown = r"> a lighthouse in fog, watercolor\n(⏳ Starting…|⏳ Queued — |🎨 Working since )"
    assert any(re.match(shown, c) for c in contents)


async def test_options_reach_the_image_api(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    it = await discord_fake.slash(
        discord_fake.alice,
        prompt="two cats",
        size="1536X1024",
        quality="low",
        count=2,
        background="opaque",
        format="webp",
    )
    message = await discord_fake.result_of(it)
    [sent] = openai_fake.requests
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    assert (fields["Size"], fields["Quality"]) == ("1536x1024", "low")
    assert message["embeds"][0]["title"] == "Generated images"
    assert {k: sent.json[k] for k in ("size", "quality", "n", "background", "output_format")} == {
        "size": "1536x1024",
        "quality": "low",
        "n": 2,
        "background": "opaque",
        "output_format": "webp",
    }
    assert [a["content_type"] for a in message["attachments"]] == ["image/webp", "image/webp"]


async def test_two_images_and_a_mask_make_one_multipart_edit(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    first = discord_fake.upload(png((64, 64), (10, 120, 200)), "room.png")
    second = discord_fake.upload(png((48, 48), (250, 200, 0)), "lamp.png")
    mask = discord_fake.upload(png((64, 64), (0, 0, 0, 0)), "mask.png")
    it = await discord_fake.slash(
        discord_fake.alice, prompt="put the lamp in the room", image=first, image2=second, mask=mask
    )
    message = await discord_fake.result_of(it)

    [sent] = openai_fake.requests
    assert sent.path == "/v1/images/edits"
    assert sent.form["prompt"] == "put the lamp in the room"
    fields = [f.field for f in sent.files]
    assert fields.count("image[]") == 2 and fields.count("mask") == 1
    assert message["embeds"][0]["title"] == "Edited image"


async def test_three_images_are_sent_in_order(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    uploads = [discord_fake.upload(png(colour=c), f"part{i}.png") for i, c in enumerate(colours)]
    it = await discord_fake.slash(
        discord_fake.alice,
        prompt="combine these",
        image=uploads[0],
        image2=uploads[1],
        image3=uploads[2],
    )
    await discord_fake.result_of(it)
    assert edit_inputs(openai_fake.requests[0]) == [discord_fake.cdn_bytes(u) for u in uploads]


async def test_partial_previews_are_shown_while_generating(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot(imagine_partial_images=2)
    provider = ProviderGate.hold(app, after_preview=True)
    it = await discord_fake.slash(discord_fake.alice, prompt="a slow sunrise")

    def preview_edits() -> list[Call]:
        return [
            c
            for c in discord_fake.calls_to("PATCH", f"/{it.token}/messages/@original")
            if [f.filename for f in c.files] == ["preview.jpg"] and c.status == 200
        ]

    previews = await discord_fake.wait_until(preview_edits)
    provider.release.set()
    message = await discord_fake.result_of(it)

    assert openai_fake.requests[0].json["stream"] is True
    shown = (previews[-1].json or {})["content"]
    expected = r"> a slow sunrise\n🎨 Working since <t:(\d+):T> \(<t:\1:R>\), preview 1"
    assert re.fullmatch(expected, shown)
    assert previews[-1].files[0].data[:3] == b"\xff\xd8\xff"  # a JPEG
    assert [a["filename"] for a in message["attachments"]] != ["preview.jpg"]


async def test_size_autocomplete_offers_standard_and_typed_sizes(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()
    it = await discord_fake.autocomplete(discord_fake.alice, "size", "1792x1024")
    await discord_fake.wait_until(lambda: it.callback_type == 8)
    assert it.callback_data is not None
    assert it.callback_data["choices"][0]["value"] == "1792x1024"
    it = await discord_fake.autocomplete(discord_fake.alice, "size", "1536")
    await discord_fake.wait_until(lambda: it.callback_type == 8)
    assert it.callback_data is not None
    assert [c["value"] for c in it.callback_data["choices"]] == ["1536x1024", "1024x1536"]


async def test_commands_are_registered_globally_or_per_guild(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    _app, bot = await discord_bot()
    registered = {c["name"]: c for c in discord_fake.commands["global"]}
    assert sorted(registered) == sorted(
        ["imagine", "Edit image", "imagine-usage", "imagine-history", "imagine-admin"]
    )
    imagine, menu = registered["imagine"], registered["Edit image"]
    assert (imagine["name"], imagine["type"], menu["name"], menu["type"]) == (
        "imagine",
        1,
        "Edit image",
        3,
    )
    options = {o["name"]: o for o in imagine["options"]}
    assert next(iter(options)) == "prompt" and options["prompt"]["required"]
    assert options["size"]["autocomplete"] is True
    assert [c["value"] for c in options["quality"]["choices"]] == ["auto", "low", "medium", "high"]
    assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 4)
    assert {options[n]["type"] for n in ("image", "image2", "image3", "mask")} == {11}
    assert "format" in options

    await bot.close()
    await discord_bot(discord_guild_ids=discord_fake.guild_id)
    assert sorted(c["name"] for c in discord_fake.commands[discord_fake.guild_id]) == sorted(
        ["imagine", "Edit image", "imagine-usage", "imagine-history", "imagine-admin"]
    )
    assert discord_fake.commands["global"] == []  # no duplicates left from the global sync


async def test_a_channel_outside_the_allowed_list_is_refused_privately(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    _app, bot = await discord_bot(discord_allowed_channels="12345,general")
    it = await discord_fake.slash(discord_fake.alice, prompt="anything")
    reply = await discord_fake.private_reply(it)
    assert it.callback_type == 4
    assert reply["content"] == "⚠️ I'm not enabled in this channel."
    assert openai_fake.requests == []

    await bot.close()
    await discord_bot(discord_allowed_channels=f"12345,#{discord_fake.channel_name}")
    await discord_fake.result_of(await discord_fake.slash(discord_fake.alice, prompt="here"))
    assert len(openai_fake.requests) == 1


async def test_twenty_simultaneous_commands_are_all_deferred_and_answered(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    # Each of the three users has up to seven requests waiting at once.
    app, _bot = await discord_bot(imagine_max_concurrency=4, imagine_user_queue=8)
    gate = ProviderGate.hold(app)  # nothing finishes until every command has been answered
    users = [discord_fake.alice, discord_fake.bob, discord_fake.mod]
    interactions = await asyncio.gather(
        *(discord_fake.slash(users[i % 3], prompt=f"picture number {i}") for i in range(20))
    )

    def told_their_place() -> list[dict[str, object]]:
        return [
            e
            for it in interactions
            for e in discord_fake.webhook_edits(it)
            if "in line" in str(e.get("content"))
        ]

    # The fake refuses (and reports) any callback later than Discord's 3 seconds.
    await discord_fake.wait_until(lambda: all(it.callback_type == 5 for it in interactions))
    assert await discord_fake.wait_until(told_their_place), "nobody was told their place"
    gate.release.set()
    messages = await asyncio.gather(*(discord_fake.result_of(it) for it in interactions))

    assert [m["embeds"][0]["description"] for m in messages] == [
        f"picture number {i}" for i in range(20)
    ]
    assert len(openai_fake.requests) == 20


async def test_a_long_prompt_is_shortened_in_the_embed_but_sent_whole(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    prompt = " ".join(f"word{i}" for i in range(200))  # about 1,300 characters
    message = await discord_fake.generate(discord_fake.alice, prompt)

    shown = message["embeds"][0]["description"]
    assert len(shown) <= 300 and shown.endswith("…")
    assert prompt.startswith(shown.removesuffix("…"))
    assert openai_fake.requests[0].json["prompt"] == prompt


async def test_progress_edits_are_throttled_and_coalesced(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    # With a long interval, the start and the three previews of a quick job earn no edit.
    await discord_bot(imagine_partial_images=3, imagine_progress_interval=60)
    it = await discord_fake.slash(discord_fake.alice, prompt="a quick one")
    await discord_fake.result_of(it)

    edits = discord_fake.webhook_edits(it)
    assert len(edits) == 2 and edits[-1]["embeds"]
    assert edits[0]["content"] == "> a quick one\n⏳ Starting…"
    assert openai_fake.requests[0].json["partial_images"] == 3
    assert not [
        c
        for c in discord_fake.calls_to("PATCH", it.token)
        if c.files and not (c.json or {}).get("embeds")
    ]


async def test_custom_sizes_reach_the_api_or_are_refused_plainly(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    message = await discord_fake.generate(discord_fake.alice, "a wide sky", size="1792×1024")
    assert openai_fake.requests[0].json["size"] == "1792x1024"
    assert message["attachments"]

    it = await discord_fake.slash(discord_fake.alice, prompt="a wide sky", size="1000x1001")
    reply = await discord_fake.private_reply(it)
    assert "1000x1001 won't work" in reply["content"] and "Try " in reply["content"]
    assert len(openai_fake.requests) == 1
