"""Command line: `flask --app app signals show|fetch`."""

from __future__ import annotations

import json
import shlex
from contextlib import contextmanager
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from energy_agent import PostcodePending, SignalUnavailable
from regions import RegionError, parse_region
from storage import get_db
from timeutil import floor_slot, to_london


@contextmanager
def committed():
    """The command's database session, committed at the end; an AuthError becomes a usage error."""
    from auth import AuthError

    db = get_db()
    try:
        yield db
        db.commit()
    except AuthError as exc:
        db.rollback()
        raise click.UsageError(str(exc)) from exc


@click.group(cls=AppGroup)
def signals():
    """Grid signals: show them, or refresh the stored copy from the live APIs."""


@signals.command("show")
@click.option("--region", default="national", show_default=True, help="national, 1-17 or a postcode outward code")
@click.option("--hours", default=48, show_default=True, type=click.IntRange(1, 48))
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table")
def show(region: str, hours: int, as_json: bool):
    """Print the merged half-hourly signal for a region."""
    try:
        parsed = parse_region(region)
        now = current_app.config["CLOCK"]()
        signal = current_app.extensions["energy_agent"].signal(get_db(), parsed, floor_slot(now), hours, now)
    except (RegionError, PostcodePending, SignalUnavailable) as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(signal.model_dump(mode="json"), indent=2))
        return
    click.echo(f"{signal.region['name']} - carbon: {signal.carbon.source} {signal.carbon.detail}")
    click.echo(f"price: {signal.price.source} (Agile {signal.price.region_letter}) {signal.price.detail}")
    click.echo(f"{'start (UK)':<17} {'gCO2/kWh':>8} {'kind':<8} {'p/kWh':>7} {'price':<9}")
    for slot in signal.slots:
        price = "" if slot.price_p_per_kwh is None else f"{slot.price_p_per_kwh:7.2f}"
        click.echo(
            f"{to_london(slot.start):%a %d %b %H:%M}  {slot.carbon_g_per_kwh:>8.0f} {slot.carbon_kind:<8} "
            f"{price:>7} {slot.price_source or '':<9}"
        )


@signals.command("fetch")
def fetch():
    """Refresh the stored signal from the live APIs (what a cron job or timer runs in production)."""
    from app import refresh_once

    outcome = refresh_once(current_app._get_current_object())
    failed = 0
    for feed, text in sorted(outcome.items()):
        click.echo(f"{feed:<20} {text}")
        failed += not text.startswith(("ok", "skipped: GRID_SOURCE"))
    if failed:
        raise click.exceptions.Exit(1)


_UNITS = {"d": 1440, "h": 60, "m": 1}


def parse_minutes(text: str) -> int:
    """'3h', '90m', '1h30m', '2d' or a bare number of minutes → minutes."""
    value = text.strip().lower()
    if value.isascii() and value.isdigit():
        return int(value)
    total, number = 0, ""
    for char in value:
        if char in "0123456789.":
            number += char
        elif char in _UNITS and number:
            total += float(number) * _UNITS[char]
            number = ""
        else:
            raise click.BadParameter(f"{text!r} is not a duration like 3h, 90m, 1h30m or 2d")
    if number:
        raise click.BadParameter(f"{text!r}: give a unit (d, h or m) after {number}")
    return round(total)


@click.command("plan")
@click.option("--duration", required=True, help="run time, e.g. 3h or 90m")
@click.option("--power-kw", required=True, type=float, help="IT load in kW")
@click.option("--region", "regions", multiple=True, help="allowed region (repeat); default national")
@click.option("--asset-id", type=int, help="plan on a registered asset instead of regions")
@click.option("--within", default="24h", show_default=True, help="the job must finish within this")
@click.option("--objective", type=click.Choice(["carbon", "cost", "balanced"]), default="carbon", show_default=True)
@click.option("--interruptible", is_flag=True, help="may run in several chunks")
@click.option("--min-chunk", help="shortest chunk when interruptible, e.g. 1h")
@click.option("--carbon-cap-kg", type=float)
@click.option("--cost-cap-gbp", type=float)
@click.option("--json", "as_json", is_flag=True, help="print the POST /api/v1/plan answer")
@with_appcontext
def plan(
    duration,
    power_kw,
    regions,
    asset_id,
    within,
    objective,
    interruptible,
    min_chunk,
    carbon_cap_kg,
    cost_cap_gbp,
    as_json,
):
    """Print the best window for a job (like `cats`), with its savings against starting now."""
    from job_agent import ValidationFailed, validate
    from models import PlanSpec

    now = current_app.config["CLOCK"]()
    body = {
        "duration_minutes": parse_minutes(duration),
        "power_kw": power_kw,
        "objective": objective,
        "deadline": (now + timedelta(minutes=parse_minutes(within))).isoformat(),
        "interruptible": interruptible,
        "carbon_cap_kg": carbon_cap_kg,
        "cost_cap_gbp": cost_cap_gbp,
        "regions": list(regions) or None,
        "asset_id": asset_id,
        "min_chunk_minutes": parse_minutes(min_chunk) if min_chunk else None,
    }
    try:
        spec = validate(PlanSpec, body)
        planned = current_app.extensions["scheduler"].plan(get_db(), spec, now)
    except ValidationFailed as exc:
        raise click.UsageError(str(exc)) from exc
    if not planned.feasible:
        raise click.ClickException(f"cannot place the job ({planned.outcome.constraint}): {planned.outcome.message}")
    result = planned.body()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(format_plan(result))


def format_plan(result: dict) -> str:
    """A plan in the style of `cats`: start time, intensity now vs at the optimum, and the savings."""
    from timeutil import parse_utc

    placement, plan, baseline, savings = result["placement"], result["plan"], result["baseline"], result["savings"]
    start = to_london(parse_utc(placement["start"]))
    lines = [f"Best job start time: {start:%Y-%m-%d %H:%M %Z} (region {placement['region']})"]
    if len(placement["slots"]) > 1:
        for chunk in placement["slots"]:
            lines.append(
                f"  run {to_london(parse_utc(chunk['start'])):%a %H:%M}-{to_london(parse_utc(chunk['end'])):%H:%M}"
            )
    now_intensity = baseline["carbon_kg"] * 1000 / baseline["energy_kwh"]
    best_intensity = plan["carbon_kg"] * 1000 / plan["energy_kwh"]
    lines += [
        f"Carbon intensity if job started now       = {now_intensity:.2f} gCO2/kWh",
        f"Carbon intensity at optimal time          = {best_intensity:.2f} gCO2/kWh",
        f"Emissions: {baseline['carbon_kg']:.3f} kg now, {plan['carbon_kg']:.3f} kg planned "
        f"(saves {savings['carbon_kg']:.3f} kg, {savings['carbon_pct'] or 0:.1f} %)",
    ]
    if plan["cost_gbp"] is not None and baseline["cost_gbp"] is not None:
        lines.append(
            f"Cost: £{baseline['cost_gbp']:.2f} now, £{plan['cost_gbp']:.2f} planned "
            f"(saves £{savings['cost_gbp']:.2f}, {savings['cost_pct'] or 0:.1f} %)"
        )
    else:
        lines.append("Cost: no prices for this region")
    explanation = result["explanation"]
    lines.append(f"Why: {explanation['why']}; binding constraint: {explanation['binding_constraint']}")
    return "\n".join(lines)


@click.group(cls=AppGroup)
def audit():
    """The decision audit log."""


@audit.command("verify")
@click.option("--path", type=click.Path(dir_okay=False), help="a log file other than the app's AUDIT_LOG_PATH")
def verify(path: str | None):
    """Check every record's hash and link; exit 1 at the first break or if the file lost its tail."""
    from audit_logger import AuditLog, verify_file
    from storage import audit_checkpoint

    target = path or current_app.config["AUDIT_LOG_PATH"]
    result = verify_file(target)
    click.echo(f"{target}: {result.good} good records")
    if not result.ok:
        click.echo(f"first bad line: {result.bad_line} ({result.reason})")
        raise click.exceptions.Exit(1)
    if path is None:  # the app's own log: compare with the checkpoint the database keeps
        head = audit_checkpoint(get_db())
        if head is not None and head.seq > result.good:
            click.echo(f"truncated: the database saw record {head.seq} but the file ends at record {result.good}")
            raise click.exceptions.Exit(1)
        if head is not None and head.seq:
            seen = next(r for r in AuditLog(target).iter_decisions() if r["seq"] == head.seq)
            if seen["hash"] != head.hash:
                click.echo(f"rewritten: record {head.seq} does not have the hash the database saw")
                raise click.exceptions.Exit(1)
    click.echo("chain intact")


@click.group(cls=AppGroup)
def users():
    """Operator accounts."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="may see and change every operator's jobs")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input (for scripts)")
def create_user_command(name: str, admin: bool, password_stdin: bool):
    """Create an operator; the password is asked for (twice) unless --password-stdin."""
    from auth import create_user

    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with committed() as db:
        user = create_user(db, name, password, current_app.config["CLOCK"](), admin=admin)
    click.echo(f"created {'admin ' if user.is_admin else ''}user {user.name} (id {user.id})")


@click.group(cls=AppGroup)
def tokens():
    """API tokens for scripts (Authorization: Bearer <token>)."""


@tokens.command("create")
@click.argument("name")
@click.option("--label", default="", help="what the token is for")
def create_token_command(name: str, label: str):
    """Create a token for user NAME; the token is the last line printed, and is shown only once."""
    from auth import create_token

    with committed() as db:
        row, token = create_token(db, name, current_app.config["CLOCK"](), label)
    click.echo(f"token {row.id} for {name} ({row.prefix}…); store it now, it is not shown again:")
    click.echo(token)


@tokens.command("list")
def list_tokens_command():
    """Tokens with their owner, prefix and state (never the token itself)."""
    from sqlalchemy import select

    from storage import ApiToken, User

    db = get_db()
    for row, user in db.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)):
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id:>4} {user.name:<20} {row.prefix}…  {state:<8} {row.label}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token_command(token_id: int):
    """Revoke a token by its id (see `tokens list`)."""
    from auth import revoke_token

    with committed() as db:
        revoke_token(db, token_id, current_app.config["CLOCK"]())
    click.echo(f"token {token_id} revoked")


@click.group(cls=AppGroup)
def scheduler():
    """The scheduler process: dispatch jobs at their start, re-plan as forecasts change."""


@scheduler.command("run")
@click.option("--worker-id", default=None, help="a name for this worker's claims (default host:pid)")
@click.option("--until-idle", is_flag=True, help="exit once nothing due is left (one-shot runs, tests)")
def run_scheduler_command(worker_id: str | None, until_idle: bool):
    """Run the scheduler loop; any number of these may run against PostgreSQL."""
    import os
    import signal
    import socket
    import threading

    from app import run_scheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    click.echo(f"scheduler {worker} running (tick {current_app.config['TICK_SECONDS']} s)")
    run_scheduler(current_app._get_current_object(), worker, stop, until_idle=until_idle)


@scheduler.command("tick")
@click.option("--replan", is_flag=True, help="also re-plan jobs that have not started")
def tick_command(replan: bool):
    """One scheduler step, for a cron job or a timer."""
    import os
    import socket

    from app import scheduler_step

    result = scheduler_step(current_app._get_current_object(), f"{socket.gethostname()}:{os.getpid()}", replan)
    click.echo(f"dispatched {result['dispatched']}, moved {result['moved']}")


@click.group(cls=AppGroup)
def jobs():
    """Jobs from the command line."""


@jobs.command("export")
@click.option("--format", "fmt", type=click.Choice(["at", "sbatch"]), required=True)
def export_jobs(fmt: str):
    """Print `at -t ...` or `sbatch --begin=...` lines for scheduled jobs (times in UTC: run with TZ=UTC)."""
    from sqlalchemy import select

    from scheduler import chunks_of
    from storage import Job

    db = get_db()
    for job in db.scalars(select(Job).where(Job.status == "scheduled").order_by(Job.planned_start)):
        for number, (start, end) in enumerate(chunks_of(job), start=1):
            minutes = int((end - start).total_seconds() // 60)
            label = f"job-{job.id}" + (f"-run{number}" if job.interruptible else "")
            if fmt == "at":
                click.echo(f"TZ=UTC at -t {start:%Y%m%d%H%M} -f {label}.sh  # {job.name}, {minutes} min")
            else:
                click.echo(
                    f"sbatch --begin={start:%Y-%m-%dT%H:%M:%S} --time={minutes // 60:02d}:{minutes % 60:02d}:00 "
                    f"--job-name={shlex.quote(job.name)} {label}.sh  # times UTC"
                )


@click.command("run-job", context_settings={"ignore_unknown_options": True})
@click.option("--duration", required=True, help="run time, e.g. 2h")
@click.option("--power-kw", required=True, type=float)
@click.option("--within", default="12h", show_default=True, help="the command must finish within this")
@click.option("--region", "regions", multiple=True, help="allowed region (repeat); default national")
@click.option("--objective", type=click.Choice(["carbon", "cost", "balanced"]), default="carbon", show_default=True)
@click.option("--name", default=None, help="job name (default: the command)")
@click.option("--server", default=None, help="plan on a running server instead of locally, e.g. http://host:5000")
@click.option("--token", envvar="CEC_TOKEN", default=None, help="API token for --server (or CEC_TOKEN)")
@click.option("--dry-run", is_flag=True, help="print the plan only")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def run_job(duration, power_kw, within, regions, objective, name, server, token, dry_run, command):
    """Plan COMMAND into the best window, count down to it, run it, and record completion (like `cats`)."""
    if not command and not dry_run:
        raise click.UsageError(
            "give the command to run after --, e.g. run-job --duration 2h --power-kw 5 -- ./train.sh"
        )
    now = current_app.config["CLOCK"]()
    body = {
        "name": name or " ".join(command)[:200] or "run-job",
        "duration_minutes": parse_minutes(duration),
        "power_kw": power_kw,
        "objective": objective,
        "regions": list(regions) or None,
        "deadline": (now + timedelta(minutes=parse_minutes(within))).isoformat(),
    }
    runner = RemoteRun(server, token) if server else LocalRun()
    result = runner.plan(body, dry_run)
    click.echo(format_plan(result))
    if dry_run:
        return
    from timeutil import parse_utc

    wait_until(parse_utc(result["placement"]["start"]))
    runner.started(result)
    click.echo(f"running: {' '.join(command)}")
    code = subprocess_call(list(command))
    runner.finished(result, code)
    click.echo(f"finished with exit code {code}; job {result.get('id')} recorded as completed")
    raise click.exceptions.Exit(code)


def wait_until(start) -> None:
    """Count down on one line until `start` (by the app's clock)."""
    import time

    clock = current_app.config["CLOCK"]
    while (remaining := (start - clock()).total_seconds()) > 0:
        hours, rest = divmod(int(remaining), 3600)
        click.echo(f"\rstarts in {hours:02d}:{rest // 60:02d}:{rest % 60:02d} ", nl=False)
        time.sleep(min(remaining, 1.0))
    click.echo("")


def subprocess_call(command: list[str]) -> int:
    """Run the command in the foreground; its exit code."""
    import subprocess

    return subprocess.call(command)


class LocalRun:
    """run-job against this app's own database."""

    def plan(self, body: dict, dry_run: bool) -> dict:
        """Plan (dry run) or submit the job; the plan body, with the job id when stored."""
        from job_agent import ValidationFailed, validate
        from models import JobSpec, PlanSpec

        sched, db, now = current_app.extensions["scheduler"], get_db(), current_app.config["CLOCK"]()
        try:
            if dry_run:
                planned = sched.plan(db, validate(PlanSpec, body), now)
                job = None
            else:
                job, planned = sched.submit(db, validate(JobSpec, body), now)
        except ValidationFailed as exc:
            raise click.UsageError(str(exc)) from exc
        if not planned.feasible:
            raise click.ClickException(
                f"cannot place the job ({planned.outcome.constraint}): {planned.outcome.message}"
            )
        return {**planned.body(), "id": job.id if job else None}

    def started(self, result: dict) -> None:
        """Mark the job running now (this process is its dispatcher)."""
        current_app.extensions["scheduler"].start_now(get_db(), result["id"], current_app.config["CLOCK"]())

    def finished(self, result: dict, code: int) -> None:
        """Record completion, or failure when the command failed."""
        sched, db, now = current_app.extensions["scheduler"], get_db(), current_app.config["CLOCK"]()
        if code == 0:
            sched.complete(db, result["id"], now, reason="run-job: the command exited 0")
        else:
            sched.fail(db, result["id"], now, reason=f"run-job: the command exited {code}")


class RemoteRun:
    """run-job against a server's REST API with a bearer token."""

    def __init__(self, server: str, token: str | None):
        if not token:
            raise click.UsageError("--server needs --token (or CEC_TOKEN)")
        import requests

        self.base = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        import requests

        try:
            response = self.session.post(f"{self.base}{path}", json=body or {}, timeout=(5, 60))
        except requests.RequestException as exc:
            raise click.ClickException(f"{self.base}: {exc}") from exc
        return response.status_code, response.json() if response.content else {}

    def plan(self, body: dict, dry_run: bool) -> dict:
        """POST /api/v1/plan or /api/v1/jobs."""
        status, answer = self._post("/api/v1/plan" if dry_run else "/api/v1/jobs", body)
        if status not in (200, 201):
            errors = "; ".join(f"{e['field']}: {e['message']}" for e in answer.get("errors", []))
            raise click.ClickException(f"the server answered {status}: {errors or answer}")
        return answer

    def started(self, result: dict) -> None:
        """The server's scheduler dispatches the start; nothing to do here."""

    def finished(self, result: dict, code: int) -> None:
        """Report completion to the server."""
        status, answer = self._post(f"/api/v1/jobs/{result['id']}/complete")
        if status != 200:
            click.echo(f"warning: the server did not record completion ({status}): {answer}", err=True)


@click.group("beckn", cls=AppGroup)
def beckn_cli():
    """The Beckn provider: our signing key, known buyers, and a test BAP client."""


@beckn_cli.command("keygen")
@click.option("--force", is_flag=True, help="replace an existing key")
def keygen(force: bool):
    """Create our ed25519 signing key (BECKN_PRIVATE_KEY_PATH, mode 600) and print the public key."""
    import os

    from beckn_auth import new_seed, public_key_b64

    path = current_app.config["BECKN_PRIVATE_KEY_PATH"]
    if os.path.exists(path) and not force:
        raise click.UsageError(f"{path} exists; --force replaces it")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    seed = new_seed()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(seed + "\n")
    click.echo(f"private key written to {path} (keep it out of the repository)")
    click.echo(
        f"subscriber_id={current_app.config['BECKN_SUBSCRIBER_ID']} "
        f"unique_key_id={current_app.config['BECKN_UNIQUE_KEY_ID']}"
    )
    click.echo(f"signing_public_key={public_key_b64(seed)}")


@beckn_cli.command("subscribe")
@click.argument("subscriber_id")
@click.argument("unique_key_id")
@click.argument("signing_public_key")
@click.option("--url", default=None, help="the participant's subscriber URL")
def subscribe(subscriber_id: str, unique_key_id: str, signing_public_key: str, url: str | None):
    """Add a buyer (BAP) to the local registry of known signing keys."""
    import base64
    import binascii

    from flexibility import add_subscriber

    try:
        if len(base64.b64decode(signing_public_key, validate=True)) != 32:
            raise ValueError
    except (binascii.Error, ValueError):
        raise click.UsageError("signing_public_key must be a base64 32-byte ed25519 public key") from None
    add_subscriber(get_db(), subscriber_id, unique_key_id, signing_public_key, url, current_app.config["CLOCK"]())
    get_db().commit()
    click.echo(f"subscribed {subscriber_id}|{unique_key_id}")


@beckn_cli.command("send")
@click.argument("action", type=click.Choice(["search", "select", "init", "confirm", "status", "cancel"]))
@click.option("--to", "to", required=True, help="the BPP's Beckn base URL, e.g. http://127.0.0.1:5000/beckn")
@click.option("--bap-id", default="cli.bap.local", show_default=True)
@click.option("--key-id", default="k1", show_default=True)
@click.option("--seed-file", type=click.Path(exists=True, dir_okay=False), help="our BAP signing seed (base64)")
@click.option("--listen", type=int, default=None, help="serve /on_<action> on this 127.0.0.1 port and print it")
@click.option("--transaction-id", default=None)
@click.option("--message", "message_json", default="{}", help="the message object as JSON")
@click.option("--wait", default=30.0, show_default=True, help="seconds to wait for the callback")
def send_command(action, to, bap_id, key_id, seed_file, listen, transaction_id, message_json, wait):
    """Sign and send one Beckn action; print the ACK and, with --listen, the callback it receives."""
    import queue
    import threading
    import time

    import requests
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from beckn_auth import authorization
    from beckn_routes import new_context

    received: queue.Queue = queue.Queue()
    bap_uri = f"http://127.0.0.1:{listen}" if listen else "http://127.0.0.1:9/unused"
    server = None
    if listen:

        @Request.application
        def bap(req: Request) -> Response:
            received.put((req.path, req.get_data(as_text=True)))
            return Response('{"message":{"ack":{"status":"ACK"}}}', content_type="application/json")

        server = make_server("127.0.0.1", listen, bap, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    body = {
        "context": new_context(current_app._get_current_object(), action, bap_id, bap_uri, transaction_id),
        "message": json.loads(message_json),
    }
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if seed_file:
        with open(seed_file) as handle:
            headers["Authorization"] = authorization(handle.read().strip(), bap_id, key_id, data, int(time.time()))
    response = requests.post(f"{to.rstrip('/')}/{action}", data=data, headers=headers, timeout=(3.05, 30))
    click.echo(f"{response.status_code} {response.text.strip()}")
    click.echo(f"transaction_id={body['context']['transaction_id']}")
    if server is not None:
        try:
            path, text = received.get(timeout=wait)
            click.echo(f"callback {path}: {text}")
        except queue.Empty:
            click.echo(f"no callback within {wait:g} s")
        server.shutdown()


@click.command("backtest")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="folder for the JSON and SVG (instance/)")
@click.option("--days", type=int, default=None, help="only the first N days of 2023 (quick look)")
@with_appcontext
def backtest_command(out: str | None, days: int | None):
    """Replay 2023: decide on what was known at the time, score on what happened; table, JSON and SVG."""
    from pathlib import Path

    import backtest

    all_days = backtest.days_of(2023)[: days or None]
    with click.progressbar(length=len(all_days), label="deciding 2023") as bar:
        report = backtest.summary(backtest.run(all_days, progress=bar.update))
    click.echo(format_backtest(report))
    report_path, chart_path = backtest.write(report, Path(out or current_app.instance_path))
    click.echo(f"JSON: {report_path}\nchart: {chart_path}")


def format_backtest(report: dict) -> str:
    """The backtest as a table."""
    lines = [
        f"{report['decisions']} decisions ({report['skipped']} skipped where the recording has a hole); carbon "
        f"known as published for {report['half_hours_carbon_as_published']} half-hours, final forecast for "
        f"{report['half_hours_carbon_final_forecast']}; prices forecast for "
        f"{report['half_hours_price_forecast']} half-hours"
    ]
    for scope, title in (("objectives", "2023"), ("snapshot_period", "14 Mar - 31 May 2023 (forecasts as published)")):
        lines.append(f"\n{title}")
        lines.append(f"{'objective':<9} {'strategy':<15} {'kg CO2':>12} {'GBP':>11} {'saving':>8}")
        for objective, figures in report[scope].items():
            for name in ("baseline", "ours", "oracle", "final_forecast"):
                if name in figures:
                    f = figures[name]
                    saving = f"{f['saving_pct']:.1f} %" if "saving_pct" in f else ""
                    lines.append(
                        f"{objective:<9} {name:<15} {f['carbon_kg']:>12.1f} {f['cost_gbp']:>11.2f} {saving:>8}"
                    )
            share = figures.get("ours_share_of_oracle_pct")
            extra = figures.get("final_forecast_share_of_oracle_pct")
            lines.append(
                f"{'':<9} ours realised {share} % of the oracle's saving"
                + (f" (deciding on the final forecasts: {extra} %)" if extra is not None else "")
            )
    return "\n".join(lines)
