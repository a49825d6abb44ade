"""Browser and abuse protections: CSRF on every cookie-authenticated write, security headers, rate limits."""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from auth import bearer_token

csrf = CSRFProtect()

# Writes that need no CSRF token: the dry-run planner has no side effects and is open to anonymous scripts.
CSRF_EXEMPT_ENDPOINTS = frozenset({"api.plan"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def rate_key() -> str:
    """Limit each user on their account, and anonymous callers by address."""
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{get_remote_address()}"


limiter = Limiter(key_func=rate_key, default_limits=[lambda: current_app.config["RATE_LIMIT_DEFAULT"]])


def write_limit() -> str:
    """The limit on writes (jobs, assets, cancel, ...)."""
    return current_app.config["RATE_LIMIT_WRITES"]


def login_limit() -> str:
    """The limit on login attempts."""
    return current_app.config["RATE_LIMIT_LOGIN"]


def anonymous_limit() -> str:
    """The limit on the open, anonymous planner."""
    return current_app.config["RATE_LIMIT_ANONYMOUS_PLAN"]


def csrf_gate() -> None:
    """Check the CSRF token on cookie-authenticated writes; bearer-token calls carry no ambient credential."""
    if request.method in SAFE_METHODS or request.endpoint in CSRF_EXEMPT_ENDPOINTS:
        return
    if request.blueprint == "beckn":
        return  # Beckn requests carry their own ed25519 signatures, not cookies
    if bearer_token() is not None:
        return  # a script's explicit credential, not a cookie a browser would attach on its own
    if request.path.startswith("/api/") and not current_user.is_authenticated:
        return  # no session: the view answers 401
    csrf.protect()


def security_headers(response):
    """CSP without inline script, no sniffing, no framing, a strict referrer policy."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    return response


def init_security(app: Flask) -> None:
    """CSRF (checked by csrf_gate, not on every request), headers, and the rate limiter."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    csrf.init_app(app)
    limiter.init_app(app)
    app.before_request(csrf_gate)
    app.after_request(security_headers)
