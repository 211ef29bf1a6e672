"""A task's two documents, as plain data: the message a forwarder pulls and the record a caller polls.

* The **message** (on the work-queue stream, subject ``<model subject>.<task
  id>``) carries what the model is called with: ``args`` (the JSON body for
  its ``predict_route``) or a ``url``, and the account of the task's model.
  While it waits in the stream it *is* the task's ``PENDING`` state: the API
  publishes it and nothing else, and reads it back by task id when the
  bucket has no record yet (:meth:`TaskMessage.pending`).
* The **record** (key ``task_id`` in the results bucket) is the task's state
  once a forwarder wrote one: ``STARTED`` (a task still running after a short
  delay), then one final ``SUCCESS`` or ``FAILURE`` with the model's answer
  or the last error.  It also holds the account of the task's model, so a
  task is visible only to keys that can see that account.

Records are written with a compare-and-set on their revision (a create when
there is none yet), so with at-least-once delivery a task may run twice, but
only one answer is ever recorded (:func:`is_final` says when to stop).  Pure:
no NATS here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional

import orjson

Status = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
FINAL: frozenset[str] = frozenset({"SUCCESS", "FAILURE"})
#: Header that makes JetStream drop a duplicate publish of the same task (a client retrying a publish).
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class TaskMessage:
    """What the forwarder needs to run a task."""

    task_id: str
    model: str
    enqueued_at: float
    args: Any = None
    url: Optional[str] = None
    callback_url: Optional[str] = None
    #: The account of the task's model (who may see the task while it is only this message).
    account_id: Optional[str] = None
    #: Only in messages of earlier versions, which wrote a PENDING record before publishing: its
    #: revision, where a first delivery's compare-and-set starts (``None``: there is no record yet).
    revision: Optional[int] = None

    def encode(self) -> bytes:
        return orjson.dumps(self)  # orjson encodes dataclasses natively (far cheaper than asdict)

    @classmethod
    def decode(cls, data: bytes) -> TaskMessage:
        raw = orjson.loads(data)
        revision = raw.get("revision")
        account_id = raw.get("account_id")
        return cls(task_id=str(raw["task_id"]), model=str(raw["model"]), enqueued_at=float(raw["enqueued_at"]),
                   args=raw.get("args"), url=raw.get("url"), callback_url=raw.get("callback_url"),
                   account_id=str(account_id) if account_id is not None else None,
                   revision=int(revision) if isinstance(revision, int) else None)

    def pending(self, account_id: str, result_ttl_seconds: int) -> TaskRecord:
        """The task's record while it has none in the bucket: ``PENDING`` (``account_id``: the
        model's, used when the message does not carry one)."""
        return TaskRecord(task_id=self.task_id, model=self.model, account_id=self.account_id or account_id,
                          status="PENDING", enqueued_at=self.enqueued_at, callback_url=self.callback_url,
                          result_ttl_seconds=result_ttl_seconds)

    def request_body(self) -> Any:
        """The JSON the model's predict route gets: the args, or ``{"url": ...}`` (Launch's convention)."""
        if self.args is not None:
            return self.args
        return {"url": self.url}


@dataclass(frozen=True)
class TaskRecord:
    """A task's state in the results bucket."""

    task_id: str
    model: str
    account_id: str
    status: Status
    enqueued_at: float
    callback_url: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    #: The model's JSON answer (SUCCESS), or its error body when it answered with one (FAILURE).
    result: Any = None
    #: The model's HTTP status code, when it answered.
    status_code: Optional[int] = None
    #: What went wrong (FAILURE): the model's error text or why it could not be called.
    traceback: Optional[str] = None
    #: Deliveries so far (1 on the first attempt).
    deliveries: int = 0
    #: Seconds a final result is kept (the model's ``result_ttl_seconds``).
    result_ttl_seconds: int = 86400

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def expired(self, now: Optional[float] = None) -> bool:
        """A final result past its model's retention (the bucket may keep it longer: it uses the longest)."""
        if not self.final or self.finished_at is None:
            return False
        return (time.time() if now is None else now) > self.finished_at + self.result_ttl_seconds

    def encode(self) -> bytes:
        return orjson.dumps(self)  # orjson encodes dataclasses natively (far cheaper than asdict)

    @classmethod
    def decode(cls, data: bytes) -> TaskRecord:
        raw = orjson.loads(data)
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    def started(self, deliveries: int, now: Optional[float] = None) -> TaskRecord:
        return replace(self, status="STARTED", started_at=time.time() if now is None else now, deliveries=deliveries)

    def finished(self, status: Status, *, result: Any = None, status_code: Optional[int] = None,
                 traceback: Optional[str] = None, deliveries: int = 0,
                 now: Optional[float] = None) -> TaskRecord:
        return replace(self, status=status, result=result, status_code=status_code, traceback=traceback,
                       deliveries=deliveries, finished_at=time.time() if now is None else now)

    def public(self) -> dict[str, Any]:
        """The Launch ``GetAsyncTaskV1Response`` shape: task_id, status, result, traceback (+ status_code)."""
        return {"task_id": self.task_id, "status": self.status, "result": self.result,
                "traceback": self.traceback, "status_code": self.status_code}


def is_final(data: Optional[bytes]) -> bool:
    """Whether a stored record (raw bytes) is already SUCCESS or FAILURE."""
    if not data:
        return False
    try:
        return TaskRecord.decode(data).final
    except (ValueError, KeyError, TypeError):
        return False
