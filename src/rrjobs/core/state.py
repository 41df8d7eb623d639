"""``State``: what ``Driver.state`` reports (RoadRunner's ``jobs.State``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class State:
    """A pipeline's state as its driver sees it.

    Attributes:
        pipeline: the pipeline name.
        driver: the driver name.
        queue: the broker queue, topic, stream, URL or file.
        active: jobs ready to run (waiting in the broker or in the priority
            queue). Each driver's page says exactly what it counts.
        delayed: jobs waiting for their delay to pass.
        reserved: jobs delivered to a handler and not yet settled.
        ready: a consumer is running (not paused, not stopped).
        priority: the pipeline priority.
        error_message: why the pipeline cannot work: set by the runtime when
            ``state()`` failed, or by the driver (a queue that is gone); ``ready`` is false.
    """

    pipeline: str
    driver: str
    queue: str = ""
    active: int = 0
    delayed: int = 0
    reserved: int = 0
    ready: bool = False
    priority: int = 0
    error_message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
