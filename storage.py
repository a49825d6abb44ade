"""SQLAlchemy 2 tables and sessions: SQLite file by default, PostgreSQL via DATABASE_URL."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from flask import current_app, g
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, stored as naive UTC so SQLite and PostgreSQL behave the same."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base for every table."""


class StoredCarbonSlot(Base):
    """A half-hour of carbon intensity fetched from the live API, kept as last-known-good."""

    __tablename__ = "carbon_slots"
    __table_args__ = (UniqueConstraint("region_key", "start", name="uq_carbon_region_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region_key: Mapped[str] = mapped_column(String(16), index=True)  # "national" or "1".."17"
    start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    forecast: Mapped[int | None] = mapped_column(Integer)
    actual: Mapped[int | None] = mapped_column(Integer)
    index: Mapped[str | None] = mapped_column(String(16))
    generation_mix: Mapped[dict | None] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoredPriceSlot(Base):
    """A half-hour Agile unit rate fetched from Octopus, kept as last-known-good."""

    __tablename__ = "price_slots"
    __table_args__ = (UniqueConstraint("letter", "start", name="uq_price_letter_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    letter: Mapped[str] = mapped_column(String(1), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    value_inc_vat: Mapped[float] = mapped_column(Float)
    value_exc_vat: Mapped[float | None] = mapped_column(Float)
    product: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedStatus(Base):
    """The outcome of the last refresh of one feed ("carbon:national", "carbon:13", "price:C")."""

    __tablename__ = "feed_status"

    feed: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class PostcodeRegion(Base):
    """A postcode outward code resolved to its Carbon Intensity region by the live API."""

    __tablename__ = "postcode_regions"

    outcode: Mapped[str] = mapped_column(String(8), primary_key=True)
    region_id: Mapped[int | None] = mapped_column(Integer)  # None: asked for, not resolved yet
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class User(UserMixin, Base):
    """An operator who logs in to the web UI; scripts act as a user through API tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token for scripts, stored as its SHA-256 (the token itself is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    label: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Asset(Base):
    """A compute asset (a site or cluster): its region, power envelope and PUE."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    region_id: Mapped[int] = mapped_column(Integer)
    max_power_kw: Mapped[float] = mapped_column(Float)
    pue: Mapped[float] = mapped_column(Float)
    gpu_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """A flexible job: what was asked, its lifecycle status, and the plan chosen for it."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    regions: Mapped[list] = mapped_column(JSON)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    power_kw: Mapped[float] = mapped_column(Float)
    pue: Mapped[float] = mapped_column(Float)
    earliest_start: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    interruptible: Mapped[bool] = mapped_column(Boolean, default=False)
    min_chunk_minutes: Mapped[int | None] = mapped_column(Integer)
    objective: Mapped[str] = mapped_column(String(16))
    carbon_cap_kg: Mapped[float | None] = mapped_column(Float)
    cost_cap_gbp: Mapped[float | None] = mapped_column(Float)
    inference_count: Mapped[int | None] = mapped_column(BigInteger)
    callback_url: Mapped[str | None] = mapped_column(Text)
    planned_region: Mapped[str | None] = mapped_column(String(16), index=True)
    planned_start: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    planned_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    plan: Mapped[dict | None] = mapped_column(JSON)  # placement, totals, baseline, savings, explanation
    callback_secret: Mapped[str | None] = mapped_column(String(64))  # HMAC key for callbacks, shown once
    moves: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # re-plans that moved it
    actual_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    actual_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DispatchEvent(Base):
    """A start or stop of a job's chunk, due at a time; claimed by one scheduler worker under a lease."""

    __tablename__ = "dispatch_events"
    __table_args__ = (UniqueConstraint("job_id", "chunk", "action", name="uq_dispatch_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    chunk: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(8))  # start | stop
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | done | cancelled
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Dispatch(Base):
    """A dispatch that happened. The unique constraint is the proof that no event is dispatched twice."""

    __tablename__ = "dispatches"
    __table_args__ = (UniqueConstraint("job_id", "chunk", "action", name="uq_dispatch_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    chunk: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(8))
    worker: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    callback_status: Mapped[str | None] = mapped_column(String(64))


class Offer(Base):
    """A counter-offer for a job that could not be placed as asked."""

    __tablename__ = "offers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict] = mapped_column(JSON)
    body: Mapped[dict] = mapped_column(JSON)  # the plan the offer leads to, with its savings
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BecknSubscriber(Base):
    """A known Beckn participant and its signing key (the registry, kept locally)."""

    __tablename__ = "beckn_subscribers"
    __table_args__ = (UniqueConstraint("subscriber_id", "unique_key_id", name="uq_beckn_subscriber_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(String(200))
    unique_key_id: Mapped[str] = mapped_column(String(200))
    signing_public_key: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(8), default="BAP")
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="SUBSCRIBED")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BecknMessage(Base):
    """Every Beckn message in or out, in order; inbound message ids are unique per sender (replay guard)."""

    __tablename__ = "beckn_messages"
    __table_args__ = (UniqueConstraint("direction", "bap_id", "message_id", "action", name="uq_beckn_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(100), index=True)
    message_id: Mapped[str] = mapped_column(String(100))
    bap_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    body: Mapped[dict] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class FlexOrder(Base):
    """An order for flexibility on an asset in a window; ACTIVE orders are commitments the planner honours."""

    __tablename__ = "flex_orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(100), index=True)
    bap_id: Mapped[str] = mapped_column(String(200))
    bap_uri: Mapped[str] = mapped_column(Text)
    item_id: Mapped[str] = mapped_column(String(100))
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    direction: Mapped[str] = mapped_column(String(4))  # down | up
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    kw: Mapped[float] = mapped_column(Float)
    price_gbp: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)  # SELECTED | INITIALIZED | ACTIVE | CANCELLED
    terms: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditHead(Base):
    """The newest audit record the database has seen (one row): detects a cut-off or rewritten log file."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def checkpoint_audit(db: Session, seq: int, record_hash: str, at: datetime) -> None:
    """Advance the audit checkpoint in the caller's transaction; never moves it backwards (workers race)."""
    db.execute(update(AuditHead).where(AuditHead.id == 1, AuditHead.seq < seq).values(seq=seq, hash=record_hash, at=at))


def audit_checkpoint(db: Session) -> AuditHead | None:
    """The stored audit checkpoint."""
    return db.get(AuditHead, 1)


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs (the form TEST_DATABASE_URL and Heroku use)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    """An engine for `url`. SQLite: a busy timeout so threads and processes can share it, and write-ahead
    logging (readers never wait for a writer; commits stay fully synchronous)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker:
    """A session factory bound to `engine` (expire_on_commit off: rows are read after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision (PostgreSQL: one process at a time)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7342019)"))  # workers start together
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def get_db() -> Session:
    """The request's (or CLI command's) session, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = current_app.extensions["session_factory"]()
    return g.db


def close_db(exc: BaseException | None = None) -> None:
    """Close the session of this app context (registered with teardown_appcontext)."""
    db = g.pop("db", None)
    if db is not None:
        if exc is not None:
            db.rollback()
        db.close()
