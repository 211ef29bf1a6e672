"""Per-model metrics of ASYNC tasks (prometheus_client).

The forwarder observes what only it sees: tasks by outcome, time queued
(enqueue to first pull of that delivery) and time running (the model call).
The API exports the queue depth it reads from each model's consumer, which is
also what KEDA scales on.  Each process serves its own registry at
``/metrics``.
"""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Outcomes counted: final states, plus a delivery that was retried and one that found the task already answered.
OUTCOMES = ("success", "failure", "retried", "duplicate")


class TaskMetrics:
    """The forwarder's task series, on ``registry`` (a new one by default)."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.tasks = Counter("sgp_infra_async_tasks", "ASYNC task deliveries handled, by model and outcome",
                             ["model", "outcome"], registry=self.registry)
        self.queued_seconds = Histogram("sgp_infra_async_task_queued_seconds",
                                        "Time from enqueue to the delivery that ran the task", ["model"],
                                        buckets=TASK_BUCKETS, registry=self.registry)
        self.running_seconds = Histogram("sgp_infra_async_task_running_seconds",
                                         "Time the model took on one delivery of a task", ["model"],
                                         buckets=TASK_BUCKETS, registry=self.registry)
        #: Each labelled series, looked up once (``labels()`` checks, builds a key and locks on every call).
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._queued: dict[str, Any] = {}
        self._running: dict[str, Any] = {}

    def outcome(self, model: str, outcome: str) -> None:
        series = self._outcomes.get((model, outcome))
        if series is None:
            series = self._outcomes[(model, outcome)] = self.tasks.labels(model, outcome)
        series.inc()

    def queued(self, model: str, seconds: float) -> None:
        series = self._queued.get(model)
        if series is None:
            series = self._queued[model] = self.queued_seconds.labels(model)
        series.observe(seconds)

    def running(self, model: str, seconds: float) -> None:
        series = self._running.get(model)
        if series is None:
            series = self._running[model] = self.running_seconds.labels(model)
        series.observe(seconds)


class QueueDepth:
    """The API's gauges of each ASYNC model's queue: tasks waiting and tasks running (unacknowledged)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.waiting = Gauge("sgp_infra_async_queue_depth", "ASYNC tasks waiting in the model's queue",
                             ["model"], registry=registry)
        self.running = Gauge("sgp_infra_async_tasks_running", "ASYNC tasks delivered and not yet acknowledged",
                             ["model"], registry=registry)

    def set(self, model: str, waiting: int, running: int) -> None:
        self.waiting.labels(model).set(waiting)
        self.running.labels(model).set(running)
