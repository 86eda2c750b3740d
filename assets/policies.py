"""The run policies the assets declare: the concurrency pool of heavy training steps, and the retry policy.

Retries: `EXTERNAL_SERVICE_RETRY` (exponential backoff with jitter) is meant for
the steps that talk to a database or MLflow, set on those assets with
``retry_policy=EXTERNAL_SERVICE_RETRY``; an asset-level policy applies to every
run that executes the asset (job runs, declarative-automation runs and
backfills alike), while a job's ``op_retry_policy`` would cover only runs of
that job and would also retry steps that fail on bad tenant data. A
deterministic data error must therefore be raised as
``dg.Failure(..., allow_retries=False)`` so no policy retries it. A run that
fails outside its steps (its worker never started, its code did not load) is
re-executed from the failure by the instance's ``run_retries``
(``dagster.yaml``).
"""

import dagster as dg

# Concurrency pool of the heavy training steps; its limit is `concurrency.pools.default_limit`
# in dagster.yaml unless set explicitly (`dagster instance concurrency set training N`).
TRAINING_POOL = "training"


def _retry_setting(name: str, default: float) -> float:
    import os

    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to e.g. {default:g}.") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} is negative; set it to 0 or more.")
    return value


# Read when the code location loads (asset decorators need a policy object): CREDITTWIN_STEP_RETRIES (default 3)
# and CREDITTWIN_RETRY_DELAY_SECONDS (default 5). Tests shorten the delay; 0 retries turns retrying off.
EXTERNAL_SERVICE_RETRY = dg.RetryPolicy(
    max_retries=int(_retry_setting("CREDITTWIN_STEP_RETRIES", 3)),
    delay=_retry_setting("CREDITTWIN_RETRY_DELAY_SECONDS", 5),
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
"""Retry a step that failed on a database or MLflow call, 3 times: after about 5 s, 15 s and 35 s (+-5 s jitter)."""
