"""Audit appends per second with fsync (what the app does) next to the same loop without fsync, same run.

Written under instance/ (where the app's log lives by default), so it measures the disk the log uses.

    python bench/audit_append.py [COUNT]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit_logger import AuditLog, verify_file  # noqa: E402

RECORD = {"reason": "lowest total carbon among 85 candidate placements", "candidates": [{"score": 1.5}] * 3}


def rate(path: Path, count: int, fsync: bool) -> float:
    """Appends per second for `count` appends."""
    log = AuditLog(path, fsync=fsync)
    started = time.perf_counter()
    for i in range(count):
        log.append("plan", i, datetime.now(timezone.utc), **RECORD)
    elapsed = time.perf_counter() - started
    assert verify_file(path).good == count
    return count / elapsed


def main() -> None:
    """Alternate the two loops three times and report the medians and their ratio."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    (ROOT / "instance").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=ROOT / "instance"))
    try:
        with_sync, without = [], []
        for round_ in range(3):
            with_sync.append(rate(work / f"sync{round_}.jsonl", count, fsync=True))
            without.append(rate(work / f"nosync{round_}.jsonl", count, fsync=False))
    finally:
        shutil.rmtree(work)
    a, b = sorted(with_sync)[1], sorted(without)[1]
    print(f"{count} appends x 3 rounds, median rate (hash chain + flock + one write per record)")
    print(f"  with fsync    {a:10.0f} appends/s   ({1e3 / a:.3f} ms each)")
    print(f"  without fsync {b:10.0f} appends/s   ({1e3 / b:.3f} ms each)")
    print(f"  fsync costs a factor of {b / a:.1f}")


if __name__ == "__main__":
    main()
