"""Every decision in an append-only, hash-chained, crash-safe JSONL file.

- One JSON object per line, ASCII only (json escapes newlines, control characters and U+2028), so no user
  string can start a line of its own.
- Each record carries `prev_hash` and `hash` = SHA-256 of the canonical JSON of the record without `hash`,
  chained from GENESIS; `verify()` recomputes the chain and names the first bad line.
- Each record is one `os.write` on an O_APPEND descriptor, fsync'ed before its id is returned. An exclusive
  `flock` covers "read the last hash + write", so several processes (gunicorn workers, the scheduler) append
  safely.
- A torn last line (no trailing newline, e.g. power loss mid-write) is moved to `<path>.torn`, logged, and
  reported by `torn_events()` — never dropped silently and never accepted.

No Flask, no database, no pydantic: the crash tests run this module in bare subprocesses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

SOFTWARE_VERSION = "0.1.0"
GENESIS = hashlib.sha256(b"compute-energy-convergence audit log v1").hexdigest()
TAIL_CHUNK = 64 * 1024


def canonical(record: dict) -> bytes:
    """The bytes that are hashed and written: sorted keys, no spaces, ASCII."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_default).encode()


def record_hash(record: dict) -> str:
    """SHA-256 of the canonical JSON of the record without its `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _default(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(f"cannot record a {type(value).__name__}")


@dataclass(frozen=True)
class Receipt:
    """What an append returns: the record's id, its sequence number (= its line, 1-based) and its hash."""

    id: str
    seq: int
    hash: str


@dataclass(frozen=True)
class Verification:
    """The outcome of `verify`: how many records chain correctly, and the first bad line (1-based) if any."""

    good: int
    bad_line: int | None = None
    reason: str = ""
    head_hash: str = GENESIS

    @property
    def ok(self) -> bool:
        """True when every line chains."""
        return self.bad_line is None


class AuditLog:
    """An append-only, hash-chained JSONL file of decisions."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        self.path = Path(path)
        self.torn_path = self.path.with_name(self.path.name + ".torn")
        self.fsync = fsync  # off only in the benchmark that measures what fsync costs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cache: tuple[int, int, str] | None = None  # (file size, last seq, last hash) after our last append
        with self._locked() as fd:
            self._repair_torn_tail(fd)

    # ---- writing ------------------------------------------------------------------------------------

    def append(self, kind: str, job_id: int | None, at: datetime, **fields) -> Receipt:
        """Append one decision; returns once it is on disk."""
        record = {
            "id": str(uuid.uuid4()),
            "at": at,
            "kind": kind,
            "job_id": job_id,
            "version": SOFTWARE_VERSION,
            **fields,
        }
        with self._locked() as fd:
            self._repair_torn_tail(fd)
            size, seq, prev = self._head(fd)
            record["seq"] = seq + 1
            record["prev_hash"] = prev
            record["hash"] = record_hash(record)
            data = canonical(record) + b"\n"
            written = os.write(fd, data)
            if written != len(data):  # a short write to a regular file means the disk is full
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            if self.fsync:
                os.fsync(fd)
            self._cache = (size + len(data), seq + 1, record["hash"])
        return Receipt(record["id"], seq + 1, record["hash"])

    def _locked(self):
        return _Locked(self.path)

    def _head(self, fd: int) -> tuple[int, int, str]:
        """(size, last seq, last hash) of the file; cached when no other process wrote since our append."""
        size = os.fstat(fd).st_size
        if self._cache and self._cache[0] == size:
            return self._cache
        if size == 0:
            return 0, 0, GENESIS
        last = json.loads(_tail(fd, size - 1))  # the file ends with a newline (torn tails are cut first)
        return size, int(last["seq"]), last["hash"]

    def _repair_torn_tail(self, fd: int) -> None:
        """Move a last line without its newline to the .torn file and cut it from the log."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        tail = _tail(fd, size)
        with open(self.torn_path, "ab") as torn:
            torn.write(tail + b"\n")
            torn.flush()
            os.fsync(torn.fileno())
        os.ftruncate(fd, size - len(tail))
        os.fsync(fd)
        self._cache = None
        log.error("audit log %s: torn last line (%d bytes) moved to %s", self.path, len(tail), self.torn_path)

    # ---- reading ------------------------------------------------------------------------------------

    def torn_events(self) -> list[str]:
        """Torn lines moved aside so far (the .torn file's lines, truncated for display)."""
        if not self.torn_path.exists():
            return []
        return [line[:200] for line in self.torn_path.read_text(errors="replace").splitlines() if line]

    def iter_decisions(
        self, job_id: int | None = None, kind: str | None = None, since: datetime | None = None
    ) -> Iterator[dict]:
        """Decisions in the order written, filtered by job, kind and time (`at` >= since)."""
        if not self.path.exists():
            return
        cutoff = None if since is None else _default(since)
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # a torn tail being written right now: not a record
                record = json.loads(raw)
                if job_id is not None and record.get("job_id") != job_id:
                    continue
                if kind is not None and record.get("kind") != kind:
                    continue
                if cutoff is not None and record.get("at", "") < cutoff:
                    continue
                yield record

    def get(self, decision_id: str) -> dict | None:
        """One decision by id."""
        return next((r for r in self.iter_decisions() if r.get("id") == decision_id), None)

    def verify(self) -> Verification:
        """Check the whole chain; see `verify_file`."""
        return verify_file(self.path)


class _Locked:
    """An O_APPEND descriptor on the log, held under an exclusive flock."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> int:
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self.fd

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _tail(fd: int, end: int) -> bytes:
    """The bytes between the last newline before `end` and `end`."""
    start = end
    while start > 0:
        step = min(TAIL_CHUNK, start)
        chunk = os.pread(fd, step, start - step)
        found = chunk.rfind(b"\n")
        if found >= 0:
            start = start - step + found + 1
            break
        start -= step
    return os.pread(fd, end - start, start)


def verify_file(path: str | Path) -> Verification:
    """Recompute every hash and link. The first line that fails is reported (1-based), with why."""
    path = Path(path)
    if not path.exists():
        return Verification(0)
    prev, good = GENESIS, 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            reason = _check_line(raw, prev, number)
            if reason:
                return Verification(good, number, reason, prev)
            prev = json.loads(raw)["hash"]
            good += 1
    return Verification(good, None, "", prev)


def _check_line(raw: bytes, prev: str, number: int) -> str:
    if not raw.endswith(b"\n"):
        return "torn line (no newline at the end)"
    try:
        record = json.loads(raw)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(record, dict) or "hash" not in record or "prev_hash" not in record:
        return "not an audit record"
    if raw[:-1] != canonical(record):
        return "not in canonical form (edited)"
    if record.get("seq") != number:
        return f"seq {record.get('seq')} where {number} was expected (a record was removed, added or reordered)"
    if record["prev_hash"] != prev:
        return "prev_hash does not match the previous record (a record was removed, added or reordered)"
    if record_hash(record) != record["hash"]:
        return "hash does not match the record's content (the record was altered)"
    return ""
