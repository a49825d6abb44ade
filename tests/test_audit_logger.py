"""The audit log: hash chain, tamper evidence, crash safety under SIGKILL, concurrent writers, log injection."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from audit_logger import GENESIS, AuditLog, record_hash, verify_file
from timeutil import UTC

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

WRITER = """
import sys
sys.path.insert(0, {root!r})
from datetime import datetime, timezone
from audit_logger import AuditLog
log = AuditLog({path!r})
tag = {tag!r}
for i in range({count}):
    log.append("plan", i, datetime.now(timezone.utc), writer=tag, n=i, reason="x" * (i % 97))
"""


def writer(path: Path, count: int, tag: str) -> subprocess.Popen:
    code = WRITER.format(root=str(ROOT), path=str(path), count=count, tag=tag)
    return subprocess.Popen([sys.executable, "-c", code])


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def fill(path: Path, count: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(count):
        log.append("plan", i + 1, AT, reason=f"record {i}", candidates=[{"score": i / 3}])
    return log


def test_records_chain_from_genesis(tmp_path):
    path = tmp_path / "d.jsonl"
    log = fill(path, 3)
    records = [json.loads(line) for line in lines(path)]
    assert records[0]["prev_hash"] == GENESIS
    assert [r["seq"] for r in records] == [1, 2, 3]
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    assert all(record_hash(r) == r["hash"] for r in records)
    assert log.verify().ok and log.verify().good == 3


def test_sigkill_at_random_moments_never_leaves_a_partial_record(tmp_path):
    path = tmp_path / "d.jsonl"
    rng = random.Random(20261127)
    previous = 0
    for run in range(20):
        before = path.stat().st_size if path.exists() else 0
        process = writer(path, 1000, f"run{run}")
        started = time.monotonic()
        # wait until this writer is appending (its start-up time varies with machine load), then kill it
        while (not path.exists() or path.stat().st_size == before) and time.monotonic() - started < 20:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        result = verify_file(path)
        complete = [line for line in lines(path) if line.endswith(b"\n")]
        # every complete record is accepted; a torn tail, if any, is reported as the bad line, never accepted
        assert result.good == len(complete)
        assert result.ok or result.bad_line == len(complete) + 1
        log = AuditLog(path)  # opening moves a torn tail aside
        assert verify_file(path).ok
        receipt = log.append("plan", None, AT, reason=f"resumed after kill {run}")
        assert receipt.seq == len(complete) + 1
        assert verify_file(path).good == receipt.seq
        assert receipt.seq > previous
        previous = receipt.seq
    assert previous > 40  # the writers really were killed mid-stream, many times


def test_torn_last_line_is_moved_aside_and_reported(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    fill(path, 4)
    whole = lines(path)
    with path.open("ab") as handle:
        handle.write(whole[-1][:37])  # power lost in the middle of a write
    assert verify_file(path).bad_line == 5
    log = AuditLog(path)
    assert "torn last line" in caplog.text
    assert verify_file(path).good == 4
    assert log.torn_events() == [whole[-1][:37].decode()]
    assert log.append("plan", None, AT).seq == 5


@pytest.mark.parametrize("seed", range(3))
def test_flipping_one_byte_fails_at_exactly_that_line(tmp_path, seed):
    path = tmp_path / "d.jsonl"
    fill(path, 25)
    original = lines(path)
    rng = random.Random(seed)
    for number in range(1, len(original)):  # every earlier line (not the last)
        line = bytearray(original[number - 1])
        position = rng.randrange(len(line))
        line[position] ^= rng.choice([1, 2, 4, 8, 16, 32, 64])
        path.write_bytes(b"".join(original[: number - 1]) + bytes(line) + b"".join(original[number:]))
        result = verify_file(path)
        assert result.bad_line == number, (number, position, result)
        assert result.good == number - 1


def test_deleting_a_middle_line_fails_at_the_line_after_it(tmp_path):
    path = tmp_path / "d.jsonl"
    fill(path, 10)
    original = lines(path)
    path.write_bytes(b"".join(original[:4] + original[5:]))  # remove record 5
    result = verify_file(path)
    assert result.bad_line == 5 and result.good == 4  # record 6, now on line 5
    assert "removed" in result.reason


def test_four_processes_append_without_interleaving(tmp_path):
    path = tmp_path / "d.jsonl"
    processes = [writer(path, 500, f"w{i}") for i in range(4)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0, 0]
    result = verify_file(path)
    assert result.ok and result.good == 2000
    records = [json.loads(line) for line in lines(path)]
    assert sorted(r["seq"] for r in records) == list(range(1, 2001))
    for tag in ("w0", "w1", "w2", "w3"):
        mine = [r["n"] for r in records if r["writer"] == tag]
        assert mine == list(range(500))  # each writer's records whole and in its own order


def test_injected_newlines_stay_inside_one_record(tmp_path):
    path = tmp_path / "d.jsonl"
    log = AuditLog(path)
    nasty = 'x\n{"kind":"fake"}\r\u2028\u2029\x00\x1b[31m'
    log.append("plan", 1, AT, name=nasty)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.isascii()
    [record] = log.iter_decisions()
    assert record["name"] == nasty and record["kind"] == "plan"


def test_iter_decisions_filters(tmp_path):
    log = AuditLog(tmp_path / "d.jsonl")
    log.append("plan", 1, AT)
    log.append("cancel", 1, datetime(2026, 11, 28, tzinfo=UTC))
    log.append("plan", 2, datetime(2026, 11, 29, tzinfo=UTC))
    assert [r["kind"] for r in log.iter_decisions(job_id=1)] == ["plan", "cancel"]
    assert [r["job_id"] for r in log.iter_decisions(kind="plan")] == [1, 2]
    assert [r["seq"] for r in log.iter_decisions(since=datetime(2026, 11, 28, tzinfo=UTC))] == [2, 3]


def test_external_append_is_seen_by_a_cached_writer(tmp_path):
    path = tmp_path / "d.jsonl"
    first, second = AuditLog(path), AuditLog(path)
    first.append("plan", 1, AT)
    second.append("plan", 2, AT)
    assert first.append("plan", 3, AT).seq == 3 and verify_file(path).good == 3


def test_file_mode_and_no_fsync_option(tmp_path):
    log = AuditLog(tmp_path / "d.jsonl", fsync=False)
    log.append("plan", 1, AT)
    assert verify_file(log.path).ok
    assert os.stat(log.path).st_mode & 0o777 == 0o644
