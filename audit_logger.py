"""Decision records, one JSON object per line (JSONL), appended in order.

This is the plain append the planner writes through; the audit-trail work makes it hash-chained and
crash-safe behind the same `append` / `iter_decisions` interface.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from models import iso_z

SOFTWARE_VERSION = "0.1.0"


def _default(value):
    if isinstance(value, datetime):
        return iso_z(value)
    raise TypeError(f"cannot record {type(value).__name__}")


class AuditLog:
    """An append-only JSONL file of decisions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, kind: str, job_id: int | None, at: datetime, **fields) -> str:
        """Append one decision and return its id. json.dumps escapes control characters: one record, one line."""
        record = {
            "id": str(uuid.uuid4()),
            "at": at,
            "kind": kind,
            "job_id": job_id,
            "version": SOFTWARE_VERSION,
            **fields,
        }
        line = json.dumps(record, default=_default, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return record["id"]

    def iter_decisions(self, job_id: int | None = None, kind: str | None = None) -> Iterator[dict]:
        """Decisions in the order written, optionally for one job and/or of one kind."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if job_id is not None and record.get("job_id") != job_id:
                    continue
                if kind is not None and record.get("kind") != kind:
                    continue
                yield record
