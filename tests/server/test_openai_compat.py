"""The official ``openai`` client against the real server on loopback: chat, streaming, tools, JSON modes, errors."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from aios_core.cores.sim import SimCore

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
        },
    },
}


def client_for(server, name: str = "alice", **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.register(name, **options), max_retries=0)


def test_models_lists_models_and_cores(live_server):
    server = live_server(cores=[SimCore(name="sim-a", model="m1", t0=0.001), SimCore(name="sim-b", model="m2", t0=0.001)])
    client = client_for(server)
    ids = {m.id for m in client.models.list().data}
    assert ids == {"m1", "m2", "sim-a", "sim-b"}
    assert client.models.retrieve("m2").id == "m2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    # a core name routes to that core's model
    reply = client.chat.completions.create(model="sim-b", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "sim-b" and reply.system_fingerprint == "aios-sim-b"


def test_chat_completion_is_a_scheduled_syscall_of_the_keys_agent(server):
    client = openai.OpenAI(
        base_url=server.url + "/v1", api_key=server.register("alice"), default_headers={"X-AIOS-Program": "alice-session-7"}, max_retries=0
    )
    reply = client.chat.completions.create(
        model="sim", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        extra_body={"extra": {"sim_tokens": 7}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert len(choice.message.content.split()) == 7
    assert reply.usage.completion_tokens == 7 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    assert reply.id.startswith("chatcmpl-")
    stats = server.stats()
    alice = next(a for a in stats["agents"] if a["name"] == "alice")
    assert alice["syscalls"] == 1 and alice["completion_tokens"] == 7 and alice["by_kind"] == {"llm": 1}
    ps = {r["name"]: r for r in server.http.get("/v1/kernel/ps", headers=server.admin_headers).json()["agents"]}
    assert [p["program"] for p in ps["alice"]["programs"]] == ["alice-session-7"]
    assert ps["alice"]["programs"][0]["state"] == "idle"


def test_stream_yields_the_same_text_with_usage(server):
    client = client_for(server)
    messages = [{"role": "user", "content": "tell me something"}]
    whole = client.chat.completions.create(model="sim", messages=messages, max_tokens=40)
    chunks = list(client.chat.completions.create(model="sim", messages=messages, max_tokens=40, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_tool_calls_plain_and_streamed_then_the_tool_result_turn(server):
    client = client_for(server)
    messages = [{"role": "user", "content": "weather in Paris for 2 days?"}]
    reply = client.chat.completions.create(model="sim", messages=messages, tools=[WEATHER])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    # streamed: the SDK's own accumulator rebuilds the call from id/name and argument fragments
    with client.chat.completions.stream(model="sim", messages=messages, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert streamed.function.name == "get_weather" and json.loads(streamed.function.arguments) == json.loads(call.function.arguments)
    raw = list(client.chat.completions.create(model="sim", messages=messages, tools=[WEATHER], stream=True))
    fragments = [tc.function.arguments for c in raw if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert len(fragments) > 2  # name first (empty arguments), then several argument pieces

    # the tool result goes back as a 'tool' message; the model then answers in text
    follow = messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})},
    ]
    answer = client.chat.completions.create(model="sim", messages=follow, tools=[WEATHER])
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    forced = client.chat.completions.create(
        model="sim", messages=messages, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    none = client.chat.completions.create(model="sim", messages=messages, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


class Answer(BaseModel):
    city: str
    days: int
    sunny: bool


def test_json_object_json_schema_and_the_sdks_structured_output_parser(server):
    client = client_for(server)
    messages = [{"role": "user", "content": "answer in JSON"}]
    obj = client.chat.completions.create(model="sim", messages=messages, response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["n", "tags"]}
    shaped = client.chat.completions.create(
        model="sim", messages=messages, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}}
    )
    jsonschema.validate(json.loads(shaped.choices[0].message.content), schema)
    parsed = client.chat.completions.parse(model="sim", messages=messages, response_format=Answer)
    assert isinstance(parsed.choices[0].message.parsed, Answer)


def test_async_client_many_concurrent_requests(server):
    key = server.register("bulk")

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        replies = await asyncio.gather(
            *(client.chat.completions.create(model="sim", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=16) for i in range(24))
        )
        await client.close()
        return [r.choices[0].message.content for r in replies]

    contents = asyncio.run(main())
    assert len(contents) == 24 and all(contents)
    assert server.stats()["pools"]["sim"]["completed"] == 24


def test_errors_arrive_as_the_sdks_typed_exceptions(live_server):
    server = live_server(cores=[SimCore(t0=0.001, context_length=64)])
    client = client_for(server)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="aios-not-a-token", max_retries=0).chat.completions.create(model="sim", messages=user)
    with pytest.raises(openai.PermissionDeniedError, match="admin token cannot issue"):
        openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin, max_retries=0).chat.completions.create(model="sim", messages=user)
    with pytest.raises(openai.NotFoundError, match="no core serves model"):
        client.chat.completions.create(model="gpt-9", messages=user)
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client.chat.completions.create(model="sim", messages=user, n=2)
    with pytest.raises(openai.BadRequestError, match="image_url"):
        client.chat.completions.create(model="sim", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="sim", messages=[])
    with pytest.raises(openai.BadRequestError, match="tool_call_id"):
        client.chat.completions.create(model="sim", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sim", messages=user, max_tokens=500)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:  # same error before a stream starts: a status, not a broken stream
        client.chat.completions.create(model="sim", messages=user, max_tokens=500, stream=True)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="priority"):
        client.chat.completions.create(model="sim", messages=user, extra_headers={"X-AIOS-Priority": "-1000"})
    with pytest.raises(openai.BadRequestError, match="X-AIOS-Program"):
        client.chat.completions.create(model="sim", messages=user, extra_headers={"X-AIOS-Program": "has spaces"})
    # and the kernel keeps serving
    assert client.chat.completions.create(model="sim", messages=user, max_tokens=8).choices[0].message.content
    # multi-part text content and the 'developer' role are accepted
    parts = client.chat.completions.create(
        model="sim", max_tokens=8,
        messages=[{"role": "developer", "content": "be kind"}, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " there"}]}],
    )
    assert parts.choices[0].message.content
