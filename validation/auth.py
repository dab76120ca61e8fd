"""Accounts, sessions and CSRF tokens.

Passwords are hashed with scrypt (stdlib, salted, memory-hard). A session is a random cookie
value whose SHA-256 is stored with an expiry; each session carries its own CSRF token that every
form posts back and that is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import as_utc, audit_log, now, sessions, users

__all__ = [
    "ROLES",
    "AuthError",
    "User",
    "create_user",
    "end_session",
    "hash_password",
    "login",
    "session_user",
    "set_password",
    "verify_password",
]

ROLES = ("reviewer", "admin")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8


class AuthError(ValueError):
    """A bad account operation (unknown role, short password, taken name)."""


@dataclass(frozen=True)
class User:
    """A signed-in user and the session's CSRF token."""

    id: int
    username: str
    role: str
    csrf_token: str = ""

    @property
    def is_admin(self) -> bool:
        """Whether the user may see everyone's answers and the dashboards."""
        return self.role == "admin"


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` (base64 fields)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    enc = base64.b64encode
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${params}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


def _check(username: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role must be one of {ROLES}, got {role!r}")
    if (
        not username
        or len(username) > 64
        or not username.replace("_", "").replace("-", "").isalnum()
    ):
        raise AuthError("username: 1-64 letters, digits, '-' or '_'")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")


def create_user(
    engine: Engine, username: str, password: str, role: str = "reviewer", *, by: int | None = None
) -> int:
    """Create an account; returns its id.

    Raises:
        AuthError: for a bad role, name or password, or a name already taken.
    """
    _check(username, password, role)
    with engine.begin() as con:
        if con.execute(sa.select(users.c.id).where(users.c.username == username)).first():
            raise AuthError(f"user {username!r} exists")
        uid = con.execute(  # type: ignore[index]
            users.insert().values(
                username=username,
                password_hash=hash_password(password),
                role=role,
                active=True,
                created_at=now(),
            )
        ).inserted_primary_key[0]
        audit_log(
            con,
            user_id=by,
            action="create_user",
            entity="user",
            entity_id=uid,
            after={"username": username, "role": role},
        )
    return int(uid)


def set_password(engine: Engine, username: str, password: str, *, by: int | None = None) -> None:
    """Replace a user's password and end all their sessions.

    Raises:
        AuthError: unknown user or short password.
    """
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password: at least {MIN_PASSWORD} characters")
    with engine.begin() as con:
        row = con.execute(sa.select(users.c.id).where(users.c.username == username)).first()
        if row is None:
            raise AuthError(f"no user {username!r}")
        con.execute(
            users.update().where(users.c.id == row.id).values(password_hash=hash_password(password))
        )
        con.execute(sessions.delete().where(sessions.c.user_id == row.id))
        audit_log(con, user_id=by, action="set_password", entity="user", entity_id=row.id)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(engine: Engine, username: str, password: str, ttl: timedelta) -> str | None:
    """Check a password and open a session; returns the cookie value, or None if refused."""
    with engine.begin() as con:
        row = con.execute(
            sa.select(users).where(users.c.username == username, users.c.active.is_(True))
        ).first()
        if row is None or not verify_password(password, row.password_hash):
            if row is not None:
                audit_log(
                    con, user_id=row.id, action="login_failed", entity="user", entity_id=row.id
                )
            return None
        token = secrets.token_urlsafe(32)
        t = now()
        con.execute(sessions.delete().where(sessions.c.expires_at < t))
        con.execute(
            sessions.insert().values(
                token_hash=_token_hash(token),
                user_id=row.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=t,
                expires_at=t + ttl,
            )
        )
        audit_log(con, user_id=row.id, action="login", entity="user", entity_id=row.id)
    return token


def session_user(engine: Engine, token: str | None) -> User | None:
    """The user of a live session cookie, or None (unknown, expired or deactivated)."""
    if not token:
        return None
    with engine.connect() as con:
        row = con.execute(
            sa.select(
                users.c.id,
                users.c.username,
                users.c.role,
                sessions.c.csrf_token,
                sessions.c.expires_at,
            )
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.token_hash == _token_hash(token), users.c.active.is_(True))
        ).first()
    if row is None or as_utc(row.expires_at) <= now():
        return None
    return User(row.id, row.username, row.role, row.csrf_token)


def end_session(engine: Engine, token: str | None) -> None:
    """Log out: forget the session."""
    if token:
        with engine.begin() as con:
            con.execute(sessions.delete().where(sessions.c.token_hash == _token_hash(token)))
