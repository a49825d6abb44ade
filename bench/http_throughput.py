"""HTTP throughput under gunicorn (2 workers) as a fraction of a bare Flask hello endpoint, same run, and RSS.

Endpoints: GET /api/v1/signals, POST /api/v1/plan (anonymous dry run) and POST /api/v1/jobs (bearer token,
SQLite), on the embedded defaults with replayed recorded data. Load: wrk (Debian package) on 127.0.0.1.

    apt-get install wrk && python bench/http_throughput.py [SECONDS]
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
JOB = {"name": "bench", "duration_minutes": 180, "power_kw": 40, "regions": ["14"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app: str, cwd: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """gunicorn with 2 workers on a free port; waits until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", app],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(base + "/", timeout=2)
            return process, base
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{app} did not start")


def wrk(url: str, seconds: int, method: str = "GET", body: dict | None = None, token: str | None = None) -> float:
    """Requests per second that wrk measures (2 threads, 16 connections); non-2xx answers are reported."""
    script = None
    if method != "GET":
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        lua = [f'wrk.method = "{method}"', f"wrk.body = {json.dumps(json.dumps(body))}"]
        lua += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write("\n".join(lua) + "\n")
        script = handle.name
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"] + (["-s", script] if script else []) + [url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        print(f"    warning: {bad.group(1)} non-2xx answers from {url}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def rss_mb(master: int) -> list[float]:
    """Resident memory of each gunicorn worker (children of the master), MB."""
    out = []
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        out.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
    return out


def main() -> None:
    """Measure each endpoint and the baseline in one run; print ratios and memory."""
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = Path(tempfile.mkdtemp(prefix="cec-http-bench-"))
    env = {
        **os.environ,
        "GRID_SOURCE": "recorded",
        "DATABASE_URL": f"sqlite:///{work}/bench.sqlite3",
        "AUDIT_LOG_PATH": str(work / "decisions.jsonl"),
        "SECRET_KEY": "bench-" + "k" * 40,
        "CEC_ENV": "production",
        "RATE_LIMIT_DEFAULT": "1000000 per minute",
        "RATE_LIMIT_WRITES": "1000000 per minute",
        "RATE_LIMIT_ANONYMOUS_PLAN": "1000000 per minute",
    }
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "users", "create", "bench", "--password-stdin"],
        cwd=ROOT,
        env=env,
        input="benchmark-password-1\n",
        text=True,
        check=True,
        capture_output=True,
    )
    token = (
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "tokens", "create", "bench"],
            cwd=ROOT,
            env=env,
            text=True,
            check=True,
            capture_output=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    hello, hello_base = serve("hello_app:app", BENCH, env)
    baseline = wrk(hello_base + "/hello", seconds)
    hello_rss = rss_mb(hello.pid)
    hello.terminate()
    hello.wait()

    ours, base = serve("app:create_app()", ROOT, env)
    requests.get(base + "/api/v1/signals?region=14", timeout=30)  # load the recording in the workers first
    results = {
        "GET /api/v1/signals?region=14&hours=48": wrk(base + "/api/v1/signals?region=14&hours=48", seconds),
        "POST /api/v1/plan": wrk(base + "/api/v1/plan", seconds, "POST", JOB),
        "POST /api/v1/jobs (SQLite)": wrk(base + "/api/v1/jobs", seconds, "POST", JOB, token),
    }
    ours_rss = rss_mb(ours.pid)
    ours.terminate()
    ours.wait()

    print(f"gunicorn 2 workers, wrk 2 threads x 16 connections x {seconds} s, {os.cpu_count()} cores, same run")
    print(f"  bare Flask GET /hello                 {baseline:9.0f} req/s   (baseline)")
    targets = {"GET": 60, "POST /api/v1/plan": 40, "POST /api/v1/jobs": 20}
    for name, rate in results.items():
        target = next(v for k, v in targets.items() if name.startswith(k))
        print(f"  {name:<38}{rate:9.0f} req/s   {100 * rate / baseline:5.1f} % of bare Flask (target >= {target} %)")
    print(
        f"  RSS per worker: ours {', '.join(f'{m:.0f}' for m in ours_rss)} MB; "
        f"bare Flask {', '.join(f'{m:.0f}' for m in hello_rss)} MB"
    )


if __name__ == "__main__":
    main()
