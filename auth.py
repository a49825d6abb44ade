"""Who is calling: operators (password, session cookie) and scripts (bearer API tokens), and what they may see.

Passwords are hashed with scrypt (Werkzeug's default KDF). API tokens are 256-bit random strings shown once
and stored as SHA-256, revocable, each tied to a user.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from functools import wraps

from flask import current_app, g, jsonify, redirect, request, url_for
from flask_login import LoginManager, current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from storage import ApiToken, User, get_db

TOKEN_PREFIX = "cec_"
MIN_PASSWORD = 12
login_manager = LoginManager()
login_manager.login_view = "web.login"
login_manager.login_message = "Log in to see that page."

# A hash of a random password: checking it costs the same as a real check, so a missing user and a wrong
# password take equally long.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A user or token operation that cannot be done (duplicate name, short password, unknown user)."""


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: Session, name: str, password: str, now: datetime, admin: bool = False) -> User:
    """A new operator account; the caller commits."""
    name = name.strip()
    if not name or len(name) > 80:
        raise AuthError("the user name must be 1-80 characters")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must be at least {MIN_PASSWORD} characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise AuthError(f"a user named {name!r} exists")
    user = User(name=name, password_hash=generate_password_hash(password), is_admin=admin, created_at=now)
    db.add(user)
    return user


def authenticate(db: Session, name: str, password: str) -> User | None:
    """The user with this name and password, or None (in constant time either way)."""
    name = (name or "").strip()
    if "\x00" in name or len(name) > 80:  # PostgreSQL refuses NUL in text; no account has such a name
        name = ""
    user = db.scalar(select(User).where(User.name == name)) if name else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    return user if check_password_hash(user.password_hash, password or "") else None


def create_token(db: Session, user_name: str, now: datetime, label: str = "") -> tuple[ApiToken, str]:
    """A new API token for a user: the row (caller commits) and the token, which is never stored."""
    user = db.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user named {user_name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:12], label=label[:80], created_at=now)
    db.add(row)
    return row, token


def revoke_token(db: Session, token_id: int, now: datetime) -> ApiToken:
    """Revoke a token by id; the caller commits."""
    row = db.get(ApiToken, token_id)
    if row is None:
        raise AuthError(f"no token with id {token_id}")
    row.revoked_at = row.revoked_at or now
    return row


def token_user(db: Session, token: str) -> User | None:
    """The user a live (not revoked) token belongs to."""
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    return db.get(User, row.user_id)


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if the request has one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@login_manager.user_loader
def _load_session_user(user_id: str) -> User | None:
    return get_db().get(User, int(user_id)) if user_id.isascii() and user_id.isdigit() else None


@login_manager.request_loader
def _load_bearer_user(_request) -> User | None:
    token = bearer_token()
    if token is None:
        return None
    user = token_user(get_db(), token)
    g.bearer = user is not None
    return user


@login_manager.unauthorized_handler
def _unauthorized():
    if request.path.startswith("/api/"):
        message = "invalid or revoked API token" if bearer_token() else "log in, or send Authorization: Bearer <token>"
        response = jsonify({"errors": [{"field": "authorization", "message": message}]})
        response.headers["WWW-Authenticate"] = 'Bearer realm="compute-energy-convergence"'
        return response, 401
    return redirect(url_for(login_manager.login_view, next=request.full_path if request.query_string else request.path))


def login_required(view):
    """Require a logged-in operator (session) or a valid bearer token: 401 JSON under /api, login page elsewhere."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return current_app.login_manager.unauthorized()
        return view(*args, **kwargs)

    return wrapped


def owner_filter() -> int | None:
    """The owner id whose jobs the caller may see, or None for an admin (all jobs)."""
    return None if current_user.is_admin else current_user.id


def may_see(owner_id: int | None) -> bool:
    """True when the caller may see and change a job with this owner."""
    return current_user.is_admin or owner_id == current_user.id


def users_exist(db: Session) -> bool:
    """True once at least one account has been created."""
    return db.scalar(select(User.id).limit(1)) is not None
