"""Where run failures go: always the log, and a webhook when one is configured.

The run-failure sensor builds one event per failed run (tenant, run id, job,
step, error) and hands it to `FailureSink.post`. The event is always logged;
when a webhook URL is set (a platform setting) it is also POSTed there as
JSON, with a ``text`` summary line added so chat webhooks (Slack, Teams,
Mattermost) show it as it is.

A sink must never turn one failure into two: `post` does not raise, whatever
the event or the endpoint does, and returns whether the webhook took the event
(a 2xx answer) so the sensor can record it. It waits at most `timeout_s` (5 s)
and does not follow redirects (a webhook that moved is a configuration error,
not a reason to send failure details elsewhere). Webhook URLs often carry a
secret token, so only their scheme and host are ever logged.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from models.errors import CreditTwinError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
_SUMMARY_KEYS = ("tenant", "job", "run_id", "step", "error")


class AlertConfigError(CreditTwinError):
    """An alert sink configured with an unusable webhook URL."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        return None  # urllib then raises HTTPError for the 3xx answer


def _validated_url(url: object) -> str:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        host = parts.hostname if parts is not None else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host or any(c in url for c in "\r\n\x00 "):
        # the URL may hold a token or a password: show its scheme and host only
        shown = f"{parts.scheme}://{host or ''}" if parts is not None else type(url).__name__
        raise AlertConfigError(
            f"the failure webhook must be an http:// or https:// URL with a host, got {ascii(shown)[:80]}.",
            fix="set the webhook to e.g. https://hooks.example.com/..., or leave it unset to only log failures.",
        )
    return url


def _summary(event: Mapping[str, Any]) -> str:
    parts = [f"{key}={str(event[key])[:200]}" for key in _SUMMARY_KEYS if event.get(key) not in (None, "")]
    return "CreditTwin run failure" + (": " + ", ".join(parts) if parts else "")


class FailureSink:
    """Posts run-failure events to the log and, when set, to a webhook.

    Args:
        webhook_url: an http(s) URL to POST each event to as JSON, or None to
            only log.
        timeout_s: how long one POST may take before it counts as undelivered.

    Raises:
        AlertConfigError: a webhook URL that is not http(s) with a host, or a
            timeout that is not a positive number.
    """

    def __init__(self, webhook_url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise AlertConfigError(
                f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}.", fix="pass e.g. timeout_s=5."
            )
        self.webhook_url = None if webhook_url in (None, "") else _validated_url(webhook_url)
        self.timeout_s = float(timeout_s)
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def destination(self) -> str:
        """Where events go, safe to log: ``log`` or ``log+webhook(<scheme>://<host>)``."""
        if self.webhook_url is None:
            return "log"
        parts = urlsplit(self.webhook_url)
        return f"log+webhook({parts.scheme}://{parts.hostname})"

    def post(self, event: Mapping[str, Any]) -> bool:
        """Log `event` and POST it to the webhook when one is set; never raises.

        Args:
            event: what failed, e.g. ``{"tenant": ..., "run_id": ..., "job": ...,
                "step": ..., "error": ...}``. Values that are not JSON are sent
                as their ``str``.

        Returns:
            True when the webhook answered 2xx; False when there is no webhook
            or the POST failed (refused, timed out, non-2xx), which is logged.
        """
        try:
            payload = dict(event) if isinstance(event, Mapping) else {"event": str(event)}
            payload.setdefault("text", _summary(payload))
            body = json.dumps(payload, default=str, sort_keys=True)
        except Exception as error:  # an event that cannot even be read must still not raise
            logger.error("run failure event could not be encoded (%s: %s): %r", type(error).__name__, error, event)
            return False
        logger.error("run failure: %s", body)
        if self.webhook_url is None:
            return False
        request = urllib.request.Request(
            self.webhook_url,
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "credittwin-alerts"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        except Exception as error:  # refused, unreachable, timed out, TLS: logged, never raised
            logger.warning("failure webhook %s not reached: %s: %s", self.destination, type(error).__name__, error)
            return False
        if 200 <= status < 300:
            return True
        logger.warning("failure webhook %s answered HTTP %s; the event is in the log only", self.destination, status)
        return False
