"""Configuration from environment variables (12-factor), with the embedded defaults for `python app.py`."""

from __future__ import annotations

import os
from pathlib import Path

from timeutil import utcnow

INSTANCE_DIR = Path(os.environ.get("INSTANCE_PATH", Path(__file__).resolve().parent / "instance"))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def from_env() -> dict:
    """Settings read from the environment at start-up."""
    env = os.environ.get("CEC_ENV", "development")
    return {
        # development (python app.py) | production (gunicorn; SECRET_KEY required, Secure cookies)
        "ENV_NAME": env,
        "SECRET_KEY": os.environ.get("SECRET_KEY"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env == "production",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": env == "production",
        "REDIS_URL": os.environ.get("REDIS_URL"),
        "RATE_LIMIT_DEFAULT": os.environ.get("RATE_LIMIT_DEFAULT", "600 per minute"),
        "RATE_LIMIT_WRITES": os.environ.get("RATE_LIMIT_WRITES", "120 per minute"),
        "RATE_LIMIT_LOGIN": os.environ.get("RATE_LIMIT_LOGIN", "10 per minute"),
        "RATE_LIMIT_ANONYMOUS_PLAN": os.environ.get("RATE_LIMIT_ANONYMOUS_PLAN", "60 per minute"),
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'cec.sqlite3'}"),
        # auto: live APIs, falling back to last-known-good stored data, then to the recorded real data
        "GRID_SOURCE": os.environ.get("GRID_SOURCE", "auto"),
        "STALE_AFTER_MINUTES": _int("STALE_AFTER_MINUTES", 90),
        "REFRESH_SECONDS": _int("REFRESH_SECONDS", 1800),
        # National (and England/Scotland/Wales) signals have no Agile region: use this one's prices, labelled.
        "NATIONAL_PRICE_REGION": os.environ.get("NATIONAL_PRICE_REGION", "J"),
        "CARBON_INTENSITY_URL": os.environ.get("CARBON_INTENSITY_URL", "https://api.carbonintensity.org.uk"),
        "OCTOPUS_URL": os.environ.get("OCTOPUS_URL", "https://api.octopus.energy"),
        "UPSTREAM_CONNECT_TIMEOUT": float(os.environ.get("UPSTREAM_CONNECT_TIMEOUT", 3.05)),
        "UPSTREAM_READ_TIMEOUT": float(os.environ.get("UPSTREAM_READ_TIMEOUT", 15)),
        "UPSTREAM_RETRY_BACKOFF": float(os.environ.get("UPSTREAM_RETRY_BACKOFF", 0.5)),
        "AUDIT_LOG_PATH": os.environ.get("AUDIT_LOG_PATH", str(INSTANCE_DIR / "decisions.jsonl")),
        # The `balanced` objective prices carbon at this (GBP per tonne CO2): a policy choice, not data.
        "CARBON_PRICE_GBP_PER_TONNE": float(os.environ.get("CARBON_PRICE_GBP_PER_TONNE", 100)),
        # Scheduling: re-plan only for gains above REPLAN_THRESHOLD, at most MAX_MOVES times per job.
        "REPLAN_THRESHOLD": float(os.environ.get("REPLAN_THRESHOLD", 0.02)),
        "MAX_MOVES": _int("MAX_MOVES", 3),
        "TICK_SECONDS": _int("TICK_SECONDS", 30),
        "REPLAN_SECONDS": _int("REPLAN_SECONDS", 1800),
        "DISPATCH_LEASE_SECONDS": _int("DISPATCH_LEASE_SECONDS", 120),
        "FLEET_TIME_LIMIT": float(os.environ.get("FLEET_TIME_LIMIT", 5)),
        "CALLBACK_ATTEMPTS": _int("CALLBACK_ATTEMPTS", 3),
        "CALLBACK_BACKOFF": float(os.environ.get("CALLBACK_BACKOFF", 1.0)),
        "CALLBACK_READ_TIMEOUT": float(os.environ.get("CALLBACK_READ_TIMEOUT", 10)),
        # Callbacks (jobs and Beckn) to loopback/private addresses: allowed in development, refused in production.
        "CALLBACK_ALLOW_PRIVATE": os.environ.get("CALLBACK_ALLOW_PRIVATE", "0" if env == "production" else "1") == "1",
        # Beckn provider (BPP): our identity, signing key (never in the repo), and pricing margin.
        "BECKN_AUTH": os.environ.get("BECKN_AUTH", "on"),  # "off" only for local development
        "BECKN_DOMAIN": os.environ.get("BECKN_DOMAIN", "beckn.one:DEG:compute-energy:1.0"),
        "BECKN_SUBSCRIBER_ID": os.environ.get("BECKN_SUBSCRIBER_ID", "cec.bpp.local"),
        "BECKN_UNIQUE_KEY_ID": os.environ.get("BECKN_UNIQUE_KEY_ID", "k1"),
        "BECKN_URI": os.environ.get("BECKN_URI", "http://127.0.0.1:5000/beckn"),
        "BECKN_PRIVATE_KEY": os.environ.get("BECKN_PRIVATE_KEY"),
        "BECKN_PRIVATE_KEY_PATH": os.environ.get("BECKN_PRIVATE_KEY_PATH", str(INSTANCE_DIR / "beckn_ed25519.seed")),
        "BECKN_MARGIN_GBP_PER_KWH": float(os.environ.get("BECKN_MARGIN_GBP_PER_KWH", 0.05)),
        "BECKN_CALLBACK_ATTEMPTS": _int("BECKN_CALLBACK_ATTEMPTS", 3),
        "BECKN_CALLBACK_BACKOFF": float(os.environ.get("BECKN_CALLBACK_BACKOFF", 1.0)),
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 1024 * 1024),
        "HOST": os.environ.get("HOST", "127.0.0.1"),
        "PORT": _int("PORT", 5000),
        "CLOCK": utcnow,
    }
