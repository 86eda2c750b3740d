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

from resources.settings import Settings

# Concurrency pool of the heavy training steps; its limit is `concurrency.pools.default_limit`
# in dagster.yaml unless set explicitly (`dagster instance concurrency set training N`).
TRAINING_POOL = "training"

# Celery queues (CREDITTWIN_EXECUTOR=celery): the training steps go to workers started with `--queues training`,
# sized for model fitting, and every other step to `default`. dagster-celery routes a step by this op tag
# (dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG, spelled out so loading the code location never imports Celery).
TRAINING_QUEUE = "training"
DEFAULT_QUEUE = "default"
TRAINING_OP_TAGS = {"dagster-celery/queue": TRAINING_QUEUE}


def external_service_retry(settings: Settings) -> dg.RetryPolicy:
    """The retry policy of steps that talk to a database or MLflow, from CREDITTWIN_STEP_RETRIES and
    CREDITTWIN_RETRY_DELAY_SECONDS (tests shorten the delay; 0 retries turns retrying off)."""
    return dg.RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


# Built when the code location loads: asset decorators need the policy object.
EXTERNAL_SERVICE_RETRY = external_service_retry(Settings.from_env())
"""Retry a step that failed on a database or MLflow call, 3 times: after about 5 s, 15 s and 35 s (+-5 s jitter)."""
