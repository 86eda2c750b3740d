"""The run-failure sink: the log always, a real local HTTP webhook when set."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from resources.alerts import AlertConfigError, FailureSink

EVENT = {"tenant": "acme", "run_id": "run-1", "job": "twin_job", "step": "fitted_copula", "error": "boom"}


class _Webhook:
    """A local HTTP server that records each POST and answers with `status` (after `delay_s`)."""

    def __init__(self, status: int = 200, delay_s: float = 0.0, location: str | None = None) -> None:
        self.received: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook
                length = int(self.headers["Content-Length"])
                outer.headers.append(dict(self.headers))
                outer.received.append(json.loads(self.rfile.read(length)))
                time.sleep(delay_s)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_Webhook":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_webhook_receives_the_event_as_json(caplog: pytest.LogCaptureFixture):
    # setup
    caplog.set_level(logging.INFO, logger="resources.alerts")

    # run
    with _Webhook() as hook:
        delivered = FailureSink(hook.url).post({**EVENT, "attempt": 2})

    # assert
    assert delivered is True
    assert len(hook.received) == 1
    body = hook.received[0]
    assert {k: body[k] for k in EVENT} == EVENT and body["attempt"] == 2
    assert body["text"].startswith("CreditTwin run failure: tenant=acme") and "error=boom" in body["text"]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert any('"run_id": "run-1"' in record.getMessage() for record in caplog.records)
    assert "secret-token" not in caplog.text


def test_without_a_webhook_the_event_is_logged_only(caplog: pytest.LogCaptureFixture):
    # setup
    caplog.set_level(logging.INFO, logger="resources.alerts")
    sink = FailureSink(None)

    # run
    delivered = sink.post(EVENT)

    # assert
    assert delivered is False
    assert sink.destination == "log"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert '"tenant": "acme"' in caplog.records[0].getMessage()


def test_an_unreachable_url_returns_false_without_raising(caplog: pytest.LogCaptureFixture):
    # setup
    caplog.set_level(logging.INFO, logger="resources.alerts")
    sink = FailureSink(f"http://127.0.0.1:{_free_port()}/hooks/secret-token")

    # run
    delivered = sink.post(EVENT)

    # assert
    assert delivered is False
    assert "not reached" in caplog.text and "secret-token" not in caplog.text


def test_a_slow_webhook_times_out_and_error_answers_are_not_delivered():
    # setup / run
    with _Webhook(delay_s=2.0) as slow:
        start = time.perf_counter()
        timed_out = FailureSink(slow.url, timeout_s=0.3).post(EVENT)
        waited = time.perf_counter() - start
    with _Webhook(status=500) as failing:
        refused = FailureSink(failing.url).post(EVENT)
    with _Webhook(status=302, location="http://127.0.0.1:9/elsewhere") as moved:
        redirected = FailureSink(moved.url).post(EVENT)

    # assert
    assert timed_out is False and waited < 1.5
    assert refused is False and len(failing.received) == 1
    assert redirected is False and len(moved.received) == 1


def test_events_that_are_not_json_are_sent_as_text():
    # setup
    class Odd:
        def __str__(self) -> str:
            return "odd value"

    # run
    with _Webhook() as hook:
        delivered = FailureSink(hook.url).post({"tenant": "acme", "error": Odd(), "codes": {3}})

    # assert
    assert delivered is True
    assert hook.received[0]["error"] == "odd value" and hook.received[0]["codes"] == "{3}"


def test_only_http_and_https_urls_are_accepted():
    # run / assert
    assert FailureSink("https://hooks.example.com/x?token=abc").destination == "log+webhook(https://hooks.example.com)"
    for bad in ("file:///etc/passwd", "ftp://example.com/x", "https://", "hooks.example.com/x", "http://a b/"):
        with pytest.raises(AlertConfigError, match="http:// or https://"):
            FailureSink(bad)
    with pytest.raises(AlertConfigError, match="timeout_s"):
        FailureSink(None, timeout_s=0)
    assert FailureSink("").webhook_url is None
