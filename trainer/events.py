"""What the runner tells its caller while a run goes on (typed): `started` (the sandbox's process
group, so a restarted agent can kill a dead run's leftovers), `progress` (the runner's own
clock and counts), `evaluating`. on_event receives these as plain dicts (model_dump())."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Started(_Event):
    """Sent once, right after the training sandbox is spawned."""
    event: Literal["started"] = "started"
    pgid: int = Field(gt=1)     # kill this group to end everything the run started
    run_dir: str                # kill_leftover checks a member still works in it


class Progress(_Event):
    """About once a second while real batches are served. Every number is the runner's."""
    event: Literal["progress"] = "progress"
    progress: float = Field(ge=0.0, le=1.0)  # training seconds over the budget (or batches / max_steps)
    steps: int = Field(0, ge=0)              # real batches served so far
    tokens: int = Field(0, ge=0)             # real tokens served so far


class Evaluating(_Event):
    """Training is over and the artifact is with the locked evaluator."""
    event: Literal["evaluating"] = "evaluating"


RunnerEvent = Annotated[Union[Started, Progress, Evaluating], Field(discriminator="event")]
RUNNER_EVENTS = TypeAdapter(RunnerEvent)
EVENT_ORDER = ("started", "progress", "evaluating")  # the order they can arrive in (progress repeats)


def parse_event(data: dict) -> Started | Progress | Evaluating:
    """Validate one event dict (raises pydantic.ValidationError)."""
    return RUNNER_EVENTS.validate_python(data)
