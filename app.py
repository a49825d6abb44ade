"""Compute-Energy Convergence: the Flask application factory and `python app.py`."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

import config as config_module
from api_clients import CarbonIntensityClient, OctopusAgileClient, build_session, shared_recorded_source
from audit_logger import AuditLog
from auth import login_manager, users_exist
from beckn_routes import beckn, init_beckn
from callbacks import CallbackSender
from energy_agent import EnergyAgent
from scheduler import Scheduler
from security import init_security
from storage import close_db, get_db, make_engine, make_session_factory, upgrade_schema

log = logging.getLogger("cec")


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings, database, agents, blueprints, error handlers, CLI."""
    app = Flask(__name__, instance_path=str(config_module.INSTANCE_DIR))
    configure(app, config)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_template_helpers(app)
    register_cli(app)
    return app


def configure(app: Flask, overrides: dict | None) -> None:
    """Environment settings, then explicit overrides (tests pass theirs here)."""
    app.config.from_mapping(config_module.from_env())
    app.config.from_mapping(overrides or {})
    if not app.config.get("SECRET_KEY"):
        if app.config["ENV_NAME"] not in ("development", "testing"):
            raise RuntimeError(f"SECRET_KEY must be set outside development (CEC_ENV={app.config['ENV_NAME']})")
        # Development only: a per-process key (sessions and CSRF tokens end with the process).
        app.config["SECRET_KEY"] = os.urandom(32).hex()


def register_extensions(app: Flask) -> None:
    """Database engine and session factory, and the energy agent with its upstream clients."""
    url = app.config["DATABASE_URL"]
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
    engine = make_engine(url)
    upgrade_schema(engine)
    app.extensions["engine"] = engine
    app.extensions["session_factory"] = make_session_factory(engine)
    timeout = (app.config["UPSTREAM_CONNECT_TIMEOUT"], app.config["UPSTREAM_READ_TIMEOUT"])
    backoff = app.config["UPSTREAM_RETRY_BACKOFF"]
    app.extensions["energy_agent"] = EnergyAgent(
        mode=app.config["GRID_SOURCE"],
        stale_after=timedelta(minutes=app.config["STALE_AFTER_MINUTES"]),
        national_price_letter=app.config["NATIONAL_PRICE_REGION"],
        recorded=shared_recorded_source(),
        carbon_client=CarbonIntensityClient(
            build_session(backoff=backoff), app.config["CARBON_INTENSITY_URL"], timeout
        ),
        price_client=OctopusAgileClient(build_session(backoff=backoff), app.config["OCTOPUS_URL"], timeout),
    )
    app.extensions["scheduler"] = Scheduler(
        energy=app.extensions["energy_agent"],
        audit=AuditLog(app.config["AUDIT_LOG_PATH"]),
        carbon_price_gbp_per_tonne=app.config["CARBON_PRICE_GBP_PER_TONNE"],
        replan_threshold=app.config["REPLAN_THRESHOLD"],
        max_moves=app.config["MAX_MOVES"],
        lease=timedelta(seconds=app.config["DISPATCH_LEASE_SECONDS"]),
        fleet_time_limit=app.config["FLEET_TIME_LIMIT"],
        sender=CallbackSender(
            timeout=(app.config["UPSTREAM_CONNECT_TIMEOUT"], app.config["CALLBACK_READ_TIMEOUT"]),
            attempts=app.config["CALLBACK_ATTEMPTS"],
            backoff=app.config["CALLBACK_BACKOFF"],
            allow_private=app.config["CALLBACK_ALLOW_PRIVATE"],
        ),
    )
    init_beckn(app)
    login_manager.init_app(app)
    init_security(app)
    app.teardown_appcontext(close_db)


def register_blueprints(app: Flask) -> None:
    """One blueprint per interface: web pages, the REST API (/api/v1) and operations (/health)."""
    from api_routes import api, ops
    from web_routes import web

    app.register_blueprint(web)
    app.register_blueprint(api)
    app.register_blueprint(beckn)
    app.register_blueprint(ops)


# The field a generic JSON error names, so that every API error has the same {"errors": [...]} shape.
ERROR_FIELDS = {400: "body", 404: "path", 405: "method", 413: "body", 415: "body", 429: "rate_limit", 500: "server"}


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/health"))


def register_error_handlers(app: Flask) -> None:
    """JSON errors under /api and /health, pages elsewhere; never a traceback."""

    def handle_http(exc: HTTPException):
        if _wants_json():
            field = ERROR_FIELDS.get(exc.code, "request")
            body = {
                "error": exc.name,
                "message": exc.description,
                "status": exc.code,
                "errors": [{"field": field, "message": exc.description}],
            }
            response = jsonify(body)
            for name in ("Retry-After", "Allow", "WWW-Authenticate"):
                if exc.get_headers() and dict(exc.get_headers()).get(name):
                    response.headers[name] = dict(exc.get_headers())[name]
            return response, exc.code
        return render_template("error.html", error=exc), exc.code

    def handle_unexpected(exc: Exception):
        log.exception("unhandled error on %s", request.path)
        from werkzeug.exceptions import InternalServerError

        return handle_http(InternalServerError())

    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(Exception, handle_unexpected)


def register_template_helpers(app: Flask) -> None:
    """Filters that show UTC times on the Europe/London clock."""
    from timeutil import parse_utc, to_london

    @app.template_filter("london")
    def london(value, fmt="%a %d %b %H:%M"):
        return to_london(value).strftime(fmt) if value else ""

    @app.context_processor
    def grid_status_helper():
        def grid_status() -> dict:
            """Where the grid numbers come from now (for the banner on every page)."""
            return app.extensions["energy_agent"].health(get_db(), app.config["CLOCK"]())

        return {"grid_status": grid_status}

    @app.template_filter("london_iso")
    def london_iso(value: str, fmt="%a %d %b %H:%M"):
        """An ISO 8601 string (as stored in JSON plans) on the UK clock."""
        return to_london(parse_utc(value)).strftime(fmt) if value else ""


def register_cli(app: Flask) -> None:
    """`flask --app app signals ...`."""
    from cli import audit, backtest_command, beckn_cli, jobs, plan, run_job, scheduler, signals, tokens, users

    app.cli.add_command(users)
    app.cli.add_command(tokens)
    app.cli.add_command(audit)
    app.cli.add_command(scheduler)
    app.cli.add_command(jobs)
    app.cli.add_command(run_job)
    app.cli.add_command(beckn_cli)
    app.cli.add_command(backtest_command)
    app.cli.add_command(signals)
    app.cli.add_command(plan)


def refresh_once(app: Flask) -> dict:
    """One refresh of every feed into the store (what `signals fetch` and the refresher thread run)."""
    with app.app_context():
        agent: EnergyAgent = app.extensions["energy_agent"]
        return agent.refresh(get_db(), app.config["CLOCK"]())


def start_refresher(app: Flask) -> threading.Thread | None:
    """Refresh in a daemon thread so that no request ever waits on an upstream API."""
    if app.config["GRID_SOURCE"] == "recorded":
        return None
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                outcome = refresh_once(app)
                failed = [feed for feed, text in outcome.items() if not text.startswith("ok")]
                log.info("refresh: %d feeds ok, %d failed", len(outcome) - len(failed), len(failed))
            except Exception:  # keep refreshing whatever one cycle hit
                log.exception("refresh cycle failed")
            stop.wait(app.config["REFRESH_SECONDS"])

    thread = threading.Thread(target=loop, name="signal-refresher", daemon=True)
    thread.start()
    return thread


FIRST_USER_HINT = """
No accounts yet. Create the first (admin) operator, then an API token for scripts:
    flask --app app users create alice --admin          (asks for a password)
    flask --app app tokens create alice                 (prints the token once)
Grid signals, /health, /docs and POST /api/v1/plan work without an account.
"""


def scheduler_step(app: Flask, worker: str, replan: bool) -> dict:
    """One scheduler tick in an app context: dispatch what is due, re-plan when asked."""
    with app.app_context():
        return app.extensions["scheduler"].tick(get_db(), app.config["CLOCK"](), worker, replan=replan)


def pending_due(app: Flask) -> int:
    """How many dispatches are due and not yet done (claimed or not)."""
    from sqlalchemy import func, select

    from storage import DispatchEvent

    with app.app_context():
        now = app.config["CLOCK"]()
        query = select(func.count()).where(DispatchEvent.status == "pending", DispatchEvent.due_at <= now)
        return get_db().scalar(query)


def run_scheduler(app: Flask, worker: str, stop: threading.Event, until_idle: bool = False) -> None:
    """The scheduler loop: dispatch every TICK_SECONDS; re-plan every REPLAN_SECONDS or when new data arrives.

    With `until_idle`, return once nothing due is left (what tests and one-shot runs use).
    """
    last_replan, last_data = None, object()
    while not stop.is_set():
        now = app.config["CLOCK"]()
        with app.app_context():
            data = app.extensions["energy_agent"].data_version(get_db())
        replan = (
            last_replan is None
            or data != last_data
            or (now - last_replan).total_seconds() >= app.config["REPLAN_SECONDS"]
        )
        try:
            result = scheduler_step(app, worker, replan)
        except Exception:  # one bad tick must not stop dispatching
            log.exception("scheduler tick failed")
            result = {"dispatched": 0, "moved": 0}
        if replan:
            last_replan, last_data = now, data
        if result["dispatched"] or result["moved"]:
            log.info("scheduler %s: %s", worker, result)
        if until_idle and not result["dispatched"] and not pending_due(app):
            return
        stop.wait(0 if result["dispatched"] else app.config["TICK_SECONDS"] if not until_idle else 0.5)


def start_scheduler(app: Flask) -> threading.Thread:
    """The embedded default's scheduler: one ticker thread beside the dev server."""
    stop = threading.Event()
    worker = f"{socket.gethostname()}:{os.getpid()}:thread"
    thread = threading.Thread(target=run_scheduler, args=(app, worker, stop), name="scheduler", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """Serve on HOST:PORT with the embedded defaults (SQLite + live data, or replayed real data offline)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = create_app()
    with app.app_context():
        if not users_exist(get_db()):
            print(FIRST_USER_HINT, flush=True)
    start_refresher(app)
    start_scheduler(app)
    log.info(
        "serving on http://%s:%s (GRID_SOURCE=%s)", app.config["HOST"], app.config["PORT"], app.config["GRID_SOURCE"]
    )
    app.run(host=app.config["HOST"], port=app.config["PORT"], use_reloader=False)


if __name__ == "__main__":
    main()
