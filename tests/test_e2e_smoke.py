"""The gateway end to end, through the official SDK, against the simulator."""

from __future__ import annotations

import anthropic
import trio

from tests.gateway_fixture import open_gateway


async def test_gateway_answers_the_sdk_streaming_and_not(tmp_path) -> None:
    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:

            def call() -> tuple[str, str]:
                with anthropic.Anthropic(
                    base_url=running.url, api_key=running.key, max_retries=0
                ) as client:
                    return call_with(client)

            def call_with(client: anthropic.Anthropic) -> tuple[str, str]:
                message = client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=64,
                    messages=[{"role": "user", "content": "hello"}],
                )
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=64,
                    messages=[{"role": "user", "content": "hello"}],
                ) as stream:
                    streamed = stream.get_final_message()
                return message.content[0].text, streamed.content[0].text

            plain, streamed = await trio.to_thread.run_sync(call)

    assert plain == streamed
    assert "hello" in plain
