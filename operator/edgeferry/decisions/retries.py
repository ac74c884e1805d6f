"""When a stage that failed for a passing reason runs again: capped exponential backoff.

The registry, the Docker daemon and the scanner go away and come back (a restart, an upgrade,
a network blip). Such a failure is recorded like any other, on the stage's condition, with a
reason from `reasons.TRANSIENT_FAILURES`, and `status.retry` says when the next attempt comes:
10 s, then doubling, at most 5 minutes apart, for as long as it takes. Kept in status so that
the backoff survives an operator restart; a spec edit retries at once (a new generation), and
a stage that finishes, or a new run, clears it.
"""

from __future__ import annotations

import datetime

from edgeferry.decisions import image_steps, pipeline
from edgeferry.models import conditions, modelimage

FIRST_DELAY = datetime.timedelta(seconds=10)
MAX_DELAY = datetime.timedelta(minutes=5)


def delay(attempt: int) -> datetime.timedelta:
    """How long to wait after the `attempt`-th failure in a row (1-based): 10 s, 20 s, ... 5 min."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    grown: datetime.timedelta = FIRST_DELAY * (2 ** min(attempt - 1, 16))
    return min(grown, MAX_DELAY)


def _seconds(span: datetime.timedelta) -> str:
    return f"{span.total_seconds():.0f} s"


def retry_later(
    status: modelimage.ModelImageStatus,
    step: pipeline.Step,
    *,
    reason: str,
    error: str,
    now: datetime.datetime,
    generation: int,
) -> image_steps.Recorded:
    """The stage failed for a passing `reason`: record it and when the next attempt comes."""
    previous = status.retry
    same = (
        previous is not None and previous.stage == step.value and previous.generation == generation
    )
    attempt = previous.attempt + 1 if same and previous is not None else 1
    wait = delay(attempt)
    message = f"{error[-1000:]} (attempt {attempt}; retrying in {_seconds(wait)})"
    condition = conditions.Condition(pipeline.STAGE_CONDITION[step], "False", reason, message)
    retry = modelimage.RetryStatus(
        stage=step.value, attempt=attempt, not_before=now + wait, generation=generation
    )
    return image_steps.Recorded(
        image_steps.record(status, [condition], generation=generation, fields={"retry": retry}),
        image_steps.Event("Warning", reason, message[-900:]),
    )


def finished(status: modelimage.ModelImageStatus) -> modelimage.ModelImageStatus:
    """A stage ran to an answer (pass or fail): no attempt is pending any more."""
    return status if status.retry is None else status.model_copy(update={"retry": None})
