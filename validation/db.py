"""The review database: one schema on SQLite (default) or PostgreSQL (by URL).

Every write that changes a review, a campaign or an account also writes a row to ``audit`` in the
same transaction, so the trail is never behind the data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pipeline.dataset.layout import DatasetLayout

__all__ = [
    "app_secrets",
    "as_utc",
    "audit",
    "audit_log",
    "campaigns",
    "connect",
    "database_url",
    "insert_if_absent",
    "items",
    "login_failures",
    "metadata",
    "now",
    "reviews",
    "sessions",
    "users",
]

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # reviewer | admin
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    # Only a hash of the cookie value is stored: a leaked database does not leak live sessions.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

login_failures = sa.Table(
    "login_failures",
    metadata,
    # Recent failed logins of one account name or from one client address (validation.auth):
    # kept here, not in memory, so that they survive restarts and every app worker sees them.
    sa.Column("scope", sa.String(16), primary_key=True),  # account | address
    sa.Column("subject", sa.String(64), primary_key=True),  # the user name or the address
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),  # the back-off
    sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),  # until an admin unlocks
)

app_secrets = sa.Table(
    "app_secrets",
    metadata,
    # Keys the app derives tokens from, shared by every worker (made on first use).
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("dataset", sa.String(1024), nullable=False),  # the output dir, as given
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),  # CampaignSettings as a dict
    sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # order reviewers meet items in
    sa.Column("sample_id", sa.String(64), nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("stratum", sa.JSON, nullable=False),  # {land_cover, season, lat_band, cloud, ...}
    sa.Column("caption", sa.Text, nullable=False),  # the caption shown (gold: with a planted lie)
    sa.Column("sentences", sa.JSON, nullable=False),  # the caption split into claims
    sa.Column("facts", sa.JSON, nullable=False),  # the map context as fact lines
    sa.Column("features", sa.JSON, nullable=False),  # Overture features in pixel coordinates
    sa.Column("captioner", sa.String(256), nullable=True),
    sa.Column("prompt_version", sa.String(256), nullable=True),
    sa.Column("needed_reviews", sa.Integer, nullable=False),
    sa.Column("is_gold", sa.Boolean, nullable=False, default=False),
    sa.Column("gold", sa.JSON, nullable=True),  # {sentence, type}: the planted hallucination
    sa.UniqueConstraint("campaign_id", "sample_id", "is_gold", name="uq_item_sample"),
    sa.UniqueConstraint("campaign_id", "position", name="uq_item_position"),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("completeness", sa.Integer, nullable=True),  # 1 Excellent .. 6 Terrible
    sa.Column("hallucinations", sa.Integer, nullable=True),  # 0, 1, 2, 3 (= 3 or more)
    sa.Column("flags", sa.JSON, nullable=False),  # [{"sentence": i, "type": "count"}]
    sa.Column("edited_caption", sa.Text, nullable=True),
    sa.Column("skipped", sa.Boolean, nullable=False, default=False),
    sa.Column("skip_reason", sa.String(64), nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("seconds", sa.Float, nullable=True),  # time on the item, from the page
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("item_id", "user_id", name="uq_review_item_user"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.Integer, nullable=True),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
)


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored time as UTC: SQLite returns naive datetimes, which were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def database_url(value: str | None, dataset: Path | None) -> str:
    """The SQLAlchemy URL of the review database.

    Args:
        value: A URL (``sqlite:///reviews.db``, ``postgresql://user:pw@host/db``) or None.
        dataset: The dataset directory; the default database is ``DATASET/review/reviews.db``.

    Raises:
        ValueError: when neither is given or the URL's scheme is not SQLite or PostgreSQL.
    """
    if value is None:
        if dataset is None:
            raise ValueError("give a database URL (--db) or a dataset directory")
        path = DatasetLayout(dataset).review_db
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if value.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we install; SQLAlchemy's default would be psycopg2.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if not value.startswith(("sqlite:", "postgresql+psycopg:")):
        raise ValueError(f"review database URL must be sqlite:/// or postgresql://, got {value!r}")
    return value


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema created (idempotent)."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_con: Any, _record: Any) -> None:
            cur = dbapi_con.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer
            cur.close()

    metadata.create_all(engine)
    return engine


def insert_if_absent(con: Connection, table: sa.Table, **values: Any) -> None:
    """Insert a row unless one with its primary key exists (safe when workers race to insert)."""
    dialect = sqlite if con.dialect.name == "sqlite" else postgresql
    con.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def audit_log(
    con: Connection,
    *,
    user_id: int | None,
    action: str,
    entity: str,
    entity_id: int | None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one change to the audit trail (in the caller's transaction)."""
    con.execute(
        audit.insert().values(
            at=now(),
            user_id=user_id,
            action=action,
            entity=entity,
            entity_id=entity_id,
            before=_jsonable(before),
            after=_jsonable(after),
        )
    )
