"""The OpenAI fake itself: it must refuse what the real API refuses and answer like it."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
from typing import Any

import httpx
import jsonschema
import pytest
from PIL import Image

from tests.fakes.openai_server import SCHEMA, FakeOpenAI, assert_all_valid, schema_validator


def lenient(name: str) -> jsonschema.Draft202012Validator:
    """The schema's response definitions, with `size` free (custom gpt-image-2 sizes)."""
    defs = copy.deepcopy(SCHEMA["$defs"])

    def relax(node: Any) -> None:
        if isinstance(node, dict):
            size = node.get("properties", {}).get("size")
            if isinstance(size, dict):
                size.pop("enum", None)
            for value in node.values():
                relax(value)
        elif isinstance(node, list):
            for value in node:
                relax(value)

    relax(defs)
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})


def png(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 0).save(buf, "PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def client(fake: FakeOpenAI, key: str = "sk-test") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {key}"})


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", ""), json.loads(lines["data"])))
    return events


async def test_generation_answers_real_images_that_match_the_schema(
    openai_fake: FakeOpenAI,
) -> None:
    async with client(openai_fake) as http:
        body = {
            "model": "gpt-image-2",
            "prompt": "a lighthouse",
            "n": 2,
            "size": "1536x1024",
            "output_format": "webp",
            "output_compression": 70,
        }
        response = await http.post("/images/generations", json=body)
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    data = response.json()
    schema_validator("ImagesResponse").validate(data)
    assert len(data["data"]) == 2
    images = [decode(item["b64_json"]) for item in data["data"]]
    assert all(img.format == "WEBP" and img.size == (1536, 1024) for img in images)
    assert data["size"] == "1536x1024" and data["output_format"] == "webp"
    assert data["usage"]["output_tokens"] > 0
    assert openai_fake.requests[0].json == body


async def test_output_tokens_follow_the_gpt_image_2_formula(openai_fake: FakeOpenAI) -> None:
    async with client(openai_fake) as http:
        for quality, expected in (("low", 196), ("medium", 1756), ("high", 7024)):
            body = {"model": "gpt-image-2", "prompt": "x", "size": "1024x1024", "quality": quality}
            data = (await http.post("/images/generations", json=body)).json()
            assert data["usage"]["output_tokens"] == expected
            assert data["quality"] == quality


async def test_custom_size_and_auto(openai_fake: FakeOpenAI) -> None:
    async with client(openai_fake) as http:
        custom = await http.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x", "size": "2048x1152"}
        )
        auto = await http.post("/images/generations", json={"model": "gpt-image-2", "prompt": "x"})
    lenient("ImagesResponse").validate(custom.json())
    assert decode(custom.json()["data"][0]["b64_json"]).size == (2048, 1152)
    assert decode(auto.json()["data"][0]["b64_json"]).size == (1024, 1024)
    assert auto.json()["size"] == "1024x1024"


async def test_transparent_png_has_alpha(openai_fake: FakeOpenAI) -> None:
    async with client(openai_fake) as http:
        body = {"model": "gpt-image-2", "prompt": "x", "background": "transparent"}
        data = (await http.post("/images/generations", json=body)).json()
    assert data["background"] == "transparent"
    assert decode(data["data"][0]["b64_json"]).mode == "RGBA"


async def test_edit_multipart_with_mask_and_auto_size(openai_fake: FakeOpenAI) -> None:
    files = [
        ("image[]", ("a.png", png((600, 400)), "image/png")),
        ("image[]", ("b.png", png((300, 300)), "image/png")),
        ("mask", ("mask.png", png((600, 400), "RGBA"), "image/png")),
    ]
    form = {"model": "gpt-image-2", "prompt": "make it night", "size": "auto", "n": "1"}
    async with client(openai_fake) as http:
        response = await http.post("/images/edits", data=form, files=files)
    assert response.status_code == 200, response.text
    data = response.json()
    lenient("ImagesResponse").validate(data)
    width, height = decode(data["data"][0]["b64_json"]).size
    assert width % 16 == 0 and height % 16 == 0 and width > height  # keeps the source's shape
    recorded = openai_fake.requests[0]
    assert [f.field for f in recorded.files] == ["image[]", "image[]", "mask"]
    assert recorded.form["prompt"] == "make it night"
    assert data["usage"]["input_tokens_details"]["image_tokens"] > 0


async def test_streaming_generation_events_match_the_schema(openai_fake: FakeOpenAI) -> None:
    body = {"model": "gpt-image-2", "prompt": "x", "stream": True, "partial_images": 2, "n": 2}
    async with client(openai_fake) as http:
        response = await http.post("/images/generations", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert (
        names
        == [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed",
        ]
        * 2
    )
    for name, payload in events:
        assert payload["type"] == name
        schema_validator("ImageGenStreamEvent").validate(payload)
    assert [p["partial_image_index"] for n, p in events if n.endswith("partial_image")] == [
        0,
        1,
    ] * 2
    assert decode(events[2][1]["b64_json"]).size == (1024, 1024)


async def test_streaming_edit_uses_image_edit_events(openai_fake: FakeOpenAI) -> None:
    form = {"model": "gpt-image-2", "prompt": "x", "stream": "true", "partial_images": "1"}
    async with client(openai_fake) as http:
        response = await http.post(
            "/images/edits", data=form, files={"image": ("a.png", png(), "image/png")}
        )
    events = sse_events(response.text)
    assert [n for n, _ in events] == ["image_edit.partial_image", "image_edit.completed"]
    for _, payload in events:
        schema_validator("ImageEditStreamEvent").validate(payload)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"prompt": "x"}, "'model' is missing"),
        ({"model": "gpt-image-2", "prompt": "x", "response_format": "b64_json"}, "response_format"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, "divisible by 16"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "3840x1024"}, "aspect ratio"),
        ({"model": "gpt-image-1", "prompt": "x", "size": "2048x2048"}, "Invalid size"),
        ({"model": "gpt-image-2", "prompt": "x", "n": 11}, "schema: n"),
        ({"model": "gpt-image-2", "prompt": "x", "quality": "ultra"}, "schema: quality"),
        ({"model": "gpt-image-2", "prompt": "x", "colour": "red"}, "Unknown parameter: 'colour'"),
        ({"model": "gpt-image-2", "prompt": "x", "output_compression": 50}, "only for jpeg"),
        (
            {
                "model": "gpt-image-2",
                "prompt": "x",
                "background": "transparent",
                "output_format": "jpeg",
            },
            "Transparent background",
        ),
    ],
)
async def test_invalid_generations_are_refused_and_recorded(
    openai_fake: FakeOpenAI, body: dict[str, Any], problem: str
) -> None:
    openai_fake.expect_invalid = True
    async with client(openai_fake) as http:
        response = await http.post("/images/generations", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    schema_validator("ErrorResponse").validate(response.json())
    assert any(problem in p for p in openai_fake.requests[0].problems), openai_fake.problems


@pytest.mark.parametrize(
    ("form", "files", "problem"),
    [
        ({"moderation": "low"}, {"image": png()}, "Unknown parameter: 'moderation'"),
        ({"stream": "True"}, {"image": png()}, "booleans"),
        ({"input_fidelity": "high"}, {"image": png()}, "input_fidelity"),
        ({}, {"image": b"not an image"}, "not a decodable image"),
        ({}, {"mask": png((64, 48), "RGBA")}, "schema: (body): 'image' is a required"),
        ({}, {"image": png(), "mask": png((32, 32), "RGBA")}, "mask is (32, 32)"),
        ({}, {"image": png(), "mask": png()}, "no alpha"),
    ],
)
async def test_invalid_edits_are_refused_and_recorded(
    openai_fake: FakeOpenAI, form: dict[str, str], files: dict[str, bytes], problem: str
) -> None:
    openai_fake.expect_invalid = True
    data = {"model": "gpt-image-2", "prompt": "x", **form}
    parts = {name: (f"{name}.png", content, "image/png") for name, content in files.items()}
    async with client(openai_fake) as http:
        response = await http.post("/images/edits", data=data, files=parts)
    assert response.status_code == 400
    assert any(problem in p for p in openai_fake.requests[0].problems), openai_fake.problems


async def test_both_image_and_image_array_parts_are_refused(openai_fake: FakeOpenAI) -> None:
    openai_fake.expect_invalid = True
    files = [("image", ("a.png", png(), "image/png")), ("image[]", ("b.png", png(), "image/png"))]
    async with client(openai_fake) as http:
        response = await http.post(
            "/images/edits", data={"model": "gpt-image-2", "prompt": "x"}, files=files
        )
    assert response.status_code == 400
    assert "not both" in response.json()["error"]["message"]


async def test_a_wrong_key_gets_401(openai_fake: FakeOpenAI) -> None:
    async with client(openai_fake, key="sk-wrong") as http:
        response = await http.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x"}
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    # like the real API, the message echoes the key's start and its last four characters
    async with client(openai_fake, key="sk-proj-abcdefghijklmnop") as http:
        response = await http.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x"}
        )
    assert "sk-proj-************mnop" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "params", "status", "code"),
    [
        ("rate_limit", {"retry_after": 7}, 429, "rate_limit_exceeded"),
        ("insufficient_quota", {}, 429, "insufficient_quota"),
        ("server_error", {}, 500, None),
        ("permission_denied", {}, 403, "model_not_found"),
        (
            "moderation_blocked",
            {"categories": ["violence", "self-harm"]},
            400,
            "moderation_blocked",
        ),
        ("invalid_value", {"message": "Bad size", "param": "size"}, 400, "invalid_value"),
    ],
)
async def test_error_faults_look_like_the_real_api(
    openai_fake: FakeOpenAI, fault: str, params: dict[str, Any], status: int, code: str | None
) -> None:
    openai_fake.fail_next(fault, **params)
    async with client(openai_fake) as http:
        body = {"model": "gpt-image-2", "prompt": "x"}
        first = await http.post("/images/generations", json=body)
        second = await http.post("/images/generations", json=body)
    assert first.status_code == status
    schema_validator("ErrorResponse").validate(first.json())
    assert first.json()["error"]["code"] == code
    assert second.status_code == 200  # a fault is used up by one request
    if fault == "rate_limit":
        assert first.headers["retry-after"] == "7"
    if fault == "moderation_blocked":
        assert "safety_violations=[violence, self-harm]" in first.json()["error"]["message"]
    if fault == "invalid_value":
        assert first.json()["error"]["param"] == "size"
    assert openai_fake.requests[0].fault == fault and openai_fake.requests[1].fault is None


async def test_times_repeats_a_fault(openai_fake: FakeOpenAI) -> None:
    openai_fake.fail_next("server_error", times=2)
    async with client(openai_fake) as http:
        body = {"model": "gpt-image-2", "prompt": "x"}
        statuses = [(await http.post("/images/generations", json=body)).status_code for _ in "abc"]
    assert statuses == [500, 500, 200]


async def test_malformed_json_fault(openai_fake: FakeOpenAI) -> None:
    openai_fake.fail_next("malformed_json")
    async with client(openai_fake) as http:
        response = await http.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x"}
        )
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


async def test_bad_image_fault_is_well_formed_json_without_a_real_image(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.fail_next("bad_image")
    async with client(openai_fake) as http:
        response = await http.post(
            "/images/generations", json={"model": "gpt-image-2", "prompt": "x"}
        )
    assert response.status_code == 200
    [item] = response.json()["data"]
    with pytest.raises(ValueError):
        base64.b64decode(item["b64_json"], validate=True)


async def test_stream_garbled_sends_an_event_that_is_not_json(openai_fake: FakeOpenAI) -> None:
    openai_fake.fail_next("stream_garbled", after=1)
    body = {"model": "gpt-image-2", "prompt": "x", "stream": True, "partial_images": 2}
    async with client(openai_fake) as http:
        response = await http.post("/images/generations", json=body)
    assert response.status_code == 200
    first, garbled = response.text.strip().split("\n\n")
    assert [n for n, _ in sse_events(first)] == ["image_generation.partial_image"]
    assert garbled == "event: image_generation.completed\ndata: {not json"


async def test_stream_cut_ends_after_a_partial(openai_fake: FakeOpenAI) -> None:
    openai_fake.fail_next("stream_cut")
    body = {"model": "gpt-image-2", "prompt": "x", "stream": True, "partial_images": 2}
    async with client(openai_fake) as http:
        response = await http.post("/images/generations", json=body)
    assert [n for n, _ in sse_events(response.text)] == ["image_generation.partial_image"]


@pytest.mark.parametrize(
    ("shape", "name", "top_keys"),
    [
        ("both", "error", {"type", "created_at", "error"}),
        ("typed", "error", {"type", "created_at", "message", "code", "param"}),
        ("bare", "", {"error"}),
    ],
)
async def test_stream_error_frame(
    openai_fake: FakeOpenAI, shape: str, name: str, top_keys: set[str]
) -> None:
    openai_fake.fail_next("stream_error", shape=shape, code="moderation_blocked")
    body = {"model": "gpt-image-2", "prompt": "x", "stream": True, "partial_images": 1}
    async with client(openai_fake) as http:
        response = await http.post("/images/generations", json=body)
    events = sse_events(response.text)
    assert [n for n, _ in events] == ["image_generation.partial_image", name]
    frame = events[1][1]
    assert top_keys <= set(frame)
    error = frame.get("error", frame)
    assert error["code"] == "moderation_blocked"
    assert "safety_violations=[violence]" in error["message"]
    if shape != "typed":
        schema_validator("Error").validate(frame["error"])


async def test_timeout_fault_holds_the_answer(openai_fake: FakeOpenAI) -> None:
    openai_fake.fail_next("timeout", seconds=30)
    async with client(openai_fake) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                "/images/generations",
                json={"model": "gpt-image-2", "prompt": "x"},
                timeout=httpx.Timeout(0.2),
            )


async def test_noise_images_do_not_compress(openai_fake: FakeOpenAI) -> None:
    openai_fake.noise = True
    async with client(openai_fake) as http:
        data = (
            await http.post(
                "/images/generations",
                json={"model": "gpt-image-2", "prompt": "x", "size": "1024x1024"},
            )
        ).json()
    assert len(base64.b64decode(data["data"][0]["b64_json"])) > 3 * 1024 * 1024 * 0.9


async def test_wait_for_counts_matching_requests(openai_fake: FakeOpenAI) -> None:
    async with client(openai_fake) as http:
        for prompt in ("a", "b"):
            await http.post("/images/generations", json={"model": "gpt-image-2", "prompt": prompt})
    found = await openai_fake.wait_for(lambda r: r.json is not None, count=2)
    assert [r.json["prompt"] for r in found if r.json] == ["a", "b"]
    [b] = await openai_fake.wait_for(lambda r: r.json is not None and r.json["prompt"] == "b")
    assert b.status == 200
    with pytest.raises(TimeoutError):
        await openai_fake.wait_for(count=3, timeout=0.05)


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeOpenAI().fail_next("meteor")


async def test_an_invalid_request_fails_the_test_unless_expected(openai_fake: FakeOpenAI) -> None:
    openai_fake.expect_invalid = True
    async with client(openai_fake) as http:
        await http.post("/images/generations", json={"prompt": "no model"})
    openai_fake.expect_invalid = False
    with pytest.raises(pytest.fail.Exception, match="'model' is missing"):
        assert_all_valid(openai_fake)
    openai_fake.expect_invalid = True
    assert_all_valid(openai_fake)


async def test_unknown_endpoints_are_404_and_recorded(openai_fake: FakeOpenAI) -> None:
    openai_fake.expect_invalid = True
    async with client(openai_fake) as http:
        response = await http.post("/images/variations", json={"model": "gpt-image-2"})
    assert response.status_code == 404
    assert openai_fake.requests[0].problems == ["no such endpoint: POST /v1/images/variations"]


async def test_wait_for_sees_a_request_that_arrives_later(openai_fake: FakeOpenAI) -> None:
    async def send() -> None:
        async with client(openai_fake) as http:
            await http.post("/images/generations", json={"model": "gpt-image-2", "prompt": "late"})

    waiter = asyncio.create_task(
        openai_fake.wait_for(lambda r: r.json is not None and r.json["prompt"] == "late")
    )
    await send()
    [late] = await waiter
    assert late.path == "/v1/images/generations"
