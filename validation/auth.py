"""Accounts, sessions, CSRF tokens and the defence against password guessing.

Passwords are hashed with scrypt (stdlib, salted, memory-hard). A session is a random cookie
value whose SHA-256 is stored with an expiry; each session carries its own CSRF token that every
form posts back and that is compared in constant time. The login form, before any session, posts
a token derived from a random pre-session cookie with the app's secret (:func:`presession_token`).

Failed logins are counted per account name and per client address in ``login_failures``
(:class:`LoginPolicy` has the numbers): past a few failures each further one doubles a back-off
during which every login of that name or from that address is refused (:class:`LoginThrottled`,
even with the right password); more failures of one account lock it until an admin unlocks it
(:class:`AccountLocked`, :func:`unlock`). A name without an account is counted, throttled and
locked like one, and its password is checked against a dummy scrypt hash, so neither the answer
nor its time tells whether an account exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .db import (
    app_secrets,
    as_utc,
    audit_log,
    insert_if_absent,
    login_failures,
    now,
    sessions,
    users,
)

__all__ = [
    "ROLES",
    "AccountLocked",
    "AuthError",
    "LoginBlock",
    "LoginPolicy",
    "LoginThrottled",
    "User",
    "app_secret",
    "create_user",
    "end_session",
    "hash_password",
    "login",
    "login_blocks",
    "new_presession",
    "presession_token",
    "presession_token_ok",
    "session_user",
    "set_password",
    "unlock",
    "verify_password",
]

ROLES = ("reviewer", "admin")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8


ACCOUNT = "account"
ADDRESS = "address"


class AuthError(ValueError):
    """A bad account operation (unknown role, short password, taken name)."""


class LoginThrottled(Exception):
    """Too many recent failed logins for this name or from this address: wait and retry.

    Attributes:
        retry_after: Seconds until a login may be tried again.
    """

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class AccountLocked(Exception):
    """Too many failed logins of this account: refused until an admin unlocks it."""


@dataclass(frozen=True)
class LoginPolicy:
    """How failed logins are slowed down and locked out.

    After ``*_throttle_after`` failures of one account name (or from one client address, for any
    names), each failure blocks further logins of that name (from that address) for
    ``first_delay_s``, doubling with every further failure up to ``max_delay_s``. After
    ``lockout_after`` failures an account is locked until an admin unlocks it. A count is
    forgotten ``forget_after_s`` after its last failure, an account's also when it logs in.

    Attributes:
        account_throttle_after: Failures of one account name before the back-off starts.
        address_throttle_after: Failures from one client address before the back-off starts
            (higher: several people may share an address).
        first_delay_s: The first back-off, in seconds.
        max_delay_s: The longest back-off, in seconds.
        lockout_after: Failures of one account name that lock it.
        forget_after_s: Seconds without a failure after which the count starts again.
    """

    account_throttle_after: int = 5
    address_throttle_after: int = 20
    first_delay_s: float = 30.0
    max_delay_s: float = 900.0
    lockout_after: int = 20
    forget_after_s: float = 3600.0

    def __post_init__(self) -> None:
        counts = (self.account_throttle_after, self.address_throttle_after, self.lockout_after)
        if min(counts) < 1:
            raise ValueError("login policy: failure counts must be at least 1")
        if not 0 < self.first_delay_s <= self.max_delay_s < self.forget_after_s:
            raise ValueError("login policy: need 0 < first_delay_s <= max_delay_s < forget_after_s")

    def delay(self, scope: str, failures: int) -> timedelta | None:
        """The back-off after ``failures`` failures of an account or address (None: none)."""
        start = self.account_throttle_after if scope == ACCOUNT else self.address_throttle_after
        if failures < start:
            return None
        doublings = min(failures - start, 32)  # past the cap anyway; keeps the float finite
        return timedelta(seconds=min(self.first_delay_s * 2**doublings, self.max_delay_s))


@dataclass(frozen=True)
class LoginBlock:
    """An account name or client address that is throttled or locked now."""

    scope: str  # account | address
    subject: str  # the user name or the address
    failures: int
    last_failure_at: datetime
    blocked_until: datetime | None
    locked_at: datetime | None


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


def _valid_username(username: str) -> bool:
    return 0 < len(username) <= 64 and username.replace("_", "").replace("-", "").isalnum()


def _check(username: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role must be one of {ROLES}, got {role!r}")
    if not _valid_username(username):
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


@cache
def _dummy_hash() -> str:
    # Checked for names without an account: the same scrypt work as a real account's hash.
    return hash_password(secrets.token_urlsafe(16))


def login(
    engine: Engine,
    username: str,
    password: str,
    ttl: timedelta,
    *,
    address: str,
    policy: LoginPolicy,
) -> str | None:
    """Check a password and open a session; returns the cookie value, or None if refused.

    Args:
        engine: The review database.
        username: The name typed in the form.
        password: The password typed in the form.
        ttl: How long the session lives.
        address: The client's address (throttled like the name).
        policy: The throttling and lockout numbers.

    Raises:
        LoginThrottled: Too many recent failures for this name or from this address.
        AccountLocked: Too many failures of this name; an admin must unlock it.
    """
    # Names that cannot be accounts are throttled by address only; any other name is counted
    # whether or not it has an account, so that throttling does not tell which names exist.
    subjects = [(ADDRESS, address[:64])]
    if _valid_username(username):
        subjects.append((ACCOUNT, username))
    with engine.begin() as con:
        failures = _admit(con, subjects, policy)
        row = con.execute(
            sa.select(users).where(users.c.username == username, users.c.active.is_(True))
        ).first()
    # Outside the transaction (no lock held during scrypt); a dummy hash without an account.
    matches = verify_password(password, row.password_hash if row is not None else _dummy_hash())
    with engine.begin() as con:
        if row is None or not matches:
            _record_failure(con, failures, row.id if row is not None else None, policy)
            return None
        _forgive(con, subjects)
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


def _is_subject(scope: str, subject: str) -> sa.ColumnElement[bool]:
    return sa.and_(login_failures.c.scope == scope, login_failures.c.subject == subject)


def _failure_row(con: Connection, scope: str, subject: str) -> Any:
    # Locked until commit on PostgreSQL: logins of one name or address are counted one by one.
    return con.execute(
        sa.select(login_failures).where(_is_subject(scope, subject)).with_for_update()
    ).one()


def _admit(
    con: Connection, subjects: list[tuple[str, str]], policy: LoginPolicy
) -> dict[tuple[str, str], int]:
    """Refuse a throttled or locked login, else count it as a failure until it succeeds.

    Counting before the (slow) password check means that logins sent at once cannot all pass
    the check before the first failure is written. Returns each subject's failure count.
    """
    t = now()
    forgotten = t - timedelta(seconds=policy.forget_after_s)
    # Writes first: on SQLite the transaction takes the write lock before it reads anything.
    con.execute(
        login_failures.delete().where(
            login_failures.c.last_failure_at < forgotten, login_failures.c.locked_at.is_(None)
        )
    )
    for scope, subject in subjects:
        insert_if_absent(
            con, login_failures, scope=scope, subject=subject, failures=0, last_failure_at=t
        )
    rows = {key: _failure_row(con, *key) for key in subjects}
    for (scope, _), row in rows.items():
        if scope == ACCOUNT and (row.locked_at is not None or row.failures >= policy.lockout_after):
            raise AccountLocked
    waits = [
        as_utc(row.blocked_until) - t
        for row in rows.values()
        if row.blocked_until is not None and as_utc(row.blocked_until) > t
    ]
    if waits:
        raise LoginThrottled(math.ceil(max(waits).total_seconds()))
    counts = {}
    for (scope, subject), row in rows.items():
        counts[scope, subject] = row.failures + 1
        delay = policy.delay(scope, row.failures + 1)
        con.execute(
            login_failures.update()
            .where(_is_subject(scope, subject))
            .values(
                failures=row.failures + 1,
                last_failure_at=t,
                blocked_until=None if delay is None else t + delay,
            )
        )
    return counts


def _record_failure(
    con: Connection,
    failures: dict[tuple[str, str], int],
    user_id: int | None,
    policy: LoginPolicy,
) -> None:
    """Audit a failed login: the failure, a back-off it starts, a lockout it reaches."""
    names = {scope: subject for scope, subject in failures}
    audit_log(
        con,
        user_id=user_id,
        action="login_failed",
        entity="user",
        entity_id=user_id,
        after={"username": names.get(ACCOUNT), "address": names[ADDRESS]},
    )
    for (scope, subject), count in failures.items():
        entity, entity_id = ("user", user_id) if scope == ACCOUNT else (ADDRESS, None)
        delay = policy.delay(scope, count)
        if delay is not None:
            audit_log(
                con,
                user_id=user_id,
                action="login_throttled",
                entity=entity,
                entity_id=entity_id,
                after={scope: subject, "failures": count, "retry_after_s": delay.total_seconds()},
            )
        if scope == ACCOUNT and count >= policy.lockout_after:
            locked = con.execute(
                login_failures.update()
                .where(_is_subject(ACCOUNT, subject), login_failures.c.locked_at.is_(None))
                .values(locked_at=now())
            )
            if locked.rowcount:
                audit_log(
                    con,
                    user_id=user_id,
                    action="login_locked",
                    entity=entity,
                    entity_id=entity_id,
                    after={ACCOUNT: subject, "failures": count},
                )


def _forgive(con: Connection, subjects: list[tuple[str, str]]) -> None:
    """A successful login: the account's failures are forgotten, the address's one taken back."""
    for scope, subject in subjects:
        key = _is_subject(scope, subject)
        if scope == ACCOUNT:
            # Not a lock set meanwhile by a failure sent at the same time: only an admin lifts it.
            con.execute(login_failures.delete().where(key, login_failures.c.locked_at.is_(None)))
        else:
            con.execute(
                login_failures.update()
                .where(key, login_failures.c.failures > 0)
                .values(failures=login_failures.c.failures - 1, blocked_until=None)
            )


def unlock(engine: Engine, username: str, *, by: int | None = None) -> bool:
    """Lift an account's lockout and forget its failures; False if it was not locked."""
    key = _is_subject(ACCOUNT, username)
    with engine.begin() as con:
        row = con.execute(
            sa.select(login_failures).where(key, login_failures.c.locked_at.is_not(None))
        ).first()
        if row is None:
            return False
        con.execute(login_failures.delete().where(key))
        account = con.execute(sa.select(users.c.id).where(users.c.username == username)).first()
        audit_log(
            con,
            user_id=by,
            action="login_unlocked",
            entity="user",
            entity_id=account.id if account is not None else None,
            before={ACCOUNT: username, "failures": row.failures, "locked_at": row.locked_at},
        )
    return True


def login_blocks(engine: Engine) -> list[LoginBlock]:
    """Accounts locked and accounts or addresses in a back-off now, locked ones first."""
    t = now()
    with engine.connect() as con:
        rows = con.execute(
            sa.select(login_failures).where(
                login_failures.c.locked_at.is_not(None) | (login_failures.c.blocked_until > t)
            )
        ).fetchall()
    blocks = [
        LoginBlock(
            scope=r.scope,
            subject=r.subject,
            failures=r.failures,
            last_failure_at=as_utc(r.last_failure_at),
            blocked_until=as_utc(r.blocked_until) if r.blocked_until is not None else None,
            locked_at=as_utc(r.locked_at) if r.locked_at is not None else None,
        )
        for r in rows
    ]
    return sorted(blocks, key=lambda b: (b.locked_at is None, b.scope, b.subject))


def app_secret(engine: Engine) -> bytes:
    """The key login-form tokens are derived from: made once, kept in the database.

    Every worker (and every restart) reads the same key, so a form served by one worker is
    accepted by another.
    """
    with engine.begin() as con:
        insert_if_absent(
            con, app_secrets, name="login", value=secrets.token_urlsafe(48), created_at=now()
        )
        value = con.execute(
            sa.select(app_secrets.c.value).where(app_secrets.c.name == "login")
        ).scalar_one()
    return str(value).encode()


def new_presession() -> str:
    """A random pre-session id: the login form's cookie, before any session exists."""
    return secrets.token_urlsafe(32)


def presession_token(secret: bytes, presession: str) -> str:
    """The login form's CSRF token for a pre-session: an HMAC only the server can compute."""
    digest = hmac.new(secret, b"login-csrf:" + presession.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def presession_token_ok(secret: bytes, presession: str, token: str) -> bool:
    """Whether ``token`` is the login token of ``presession`` (constant-time compare)."""
    expected = presession_token(secret, presession)
    return bool(presession) and hmac.compare_digest(expected.encode(), token.encode())


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
