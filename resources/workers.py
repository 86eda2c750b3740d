"""Scratch Celery traffic and worker processes, for the tests and benchmarks that start their own workers.

`scratch_key_prefix` gives one run of Celery traffic a unique Redis key prefix
(`CREDITTWIN_CELERY_KEY_PREFIX`), so runs sharing a Redis never take each
other's steps, and deletes its keys afterwards; like
`resources.sqlstore.scratch_database`, an unreachable server fails at once.
`stop_worker` stops a `credittwin worker` (or any process started in a session
of its own) the way a supervisor does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

STOP_TIMEOUT_S = 60


@contextmanager
def scratch_key_prefix(broker_url: str, label: str = "credittwin-scratch") -> Iterator[str]:
    """A fresh key prefix ``<label>-<random>:`` on the Redis broker at `broker_url`; its keys are deleted on exit.

    Raises:
        redis.exceptions.ConnectionError: the broker cannot be reached (it is never silently skipped).
    """
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5)
    client.ping()
    prefix = f"{label}-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM (Celery's warm shutdown: running steps finish), then SIGKILL whatever is left of the process's
    session (a worker's pool processes) after `STOP_TIMEOUT_S`. The process must lead its own session
    (``start_new_session=True``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
