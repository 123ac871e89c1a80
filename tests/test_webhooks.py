"""Budget webhooks: what their log lines may show of a receiver's URL."""

from __future__ import annotations

import logging

import pytest
import trio

from ccag.spend import webhooks
from ccag.spend.webhooks import WebhookSender, shown_url

SECRET_URL = "https://user:pw@hooks.example.test:8443/services/T0/B0/s3cr3t?token=abc"


def test_shown_url_keeps_scheme_host_and_port_only() -> None:
    assert shown_url(SECRET_URL) == "https://hooks.example.test:8443/..."


def test_shown_url_of_a_url_without_host() -> None:
    assert shown_url("s3cr3t-not-a-url") == "a URL with no host"


class _Notice:
    def payload(self) -> dict[str, str]:
        return {"budget": "b1"}


async def test_webhooks_failed_delivery_logs_no_secret_part_of_the_url(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "ATTEMPTS", 1)
    # A loopback port nobody listens on: every attempt is refused at once.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    sender = WebhookSender()

    with caplog.at_level(logging.WARNING, logger=webhooks.__name__), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            sender.enqueue(f"http://user:pw@127.0.0.1:{port}/hooks/s3cr3t?token=abc", _Notice())
            while sender.failed == 0:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    logged = [record.getMessage() for record in caplog.records]
    assert any(f"http://127.0.0.1:{port}/..." in line for line in logged), logged
    assert not any("s3cr3t" in line or "token=abc" in line or "user:pw" in line for line in logged)
