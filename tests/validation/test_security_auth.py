"""The login's defences over HTTP: throttling, lockout and unlock, equal time for unknown names,
the pre-session login token and HSTS.

Every test runs the app with its default :class:`LoginPolicy`, on SQLite and on the real
PostgreSQL server. Back-offs are ended by writing the database (as if their time had passed),
never by waiting.
"""

import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from flows.cli import main
from tests.validation.conftest import PASSWORD
from tests.validation.test_app import csrf_of, lock_out, login_token
from validation.app import create_app
from validation.auth import LoginPolicy, create_user
from validation.db import audit, login_failures, users

POLICY = LoginPolicy()  # what the app runs with unless told otherwise
# Client addresses (documentation ranges): the attacker's and the office the reviewers work from.
ATTACKER = "203.0.113.7"
OFFICE = "198.51.100.20"


@pytest.fixture
def make_app(db_url, dataset):
    """Apps on the test's database (other workers, or restarts), closed after the test."""
    apps = []

    def make(**settings):
        apps.append(create_app(dataset.root, db_url, **settings))
        return apps[-1]

    yield make
    for app in apps:
        app.state.engine.dispose()


@pytest.fixture
def accounts(make_app):
    app = make_app()
    engine = app.state.engine
    for name, role in (("admin", "admin"), ("ann", "reviewer"), ("bob", "reviewer")):
        create_user(engine, name, PASSWORD, role)
    return app, engine


def browser_at(app, address, **kwargs):
    """A client with its own cookies, connecting from ``address``."""
    return TestClient(app, follow_redirects=False, client=(address, 50000), **kwargs)


def attempt(client, name, password):
    """Open the login form and submit it; the response."""
    token = login_token(client)
    return client.post("/login", data={"username": name, "password": password, "csrf": token})


def end_backoffs(engine):
    """Every back-off runs out (as if its time had passed); lockouts stay."""
    with engine.begin() as con:
        con.execute(login_failures.update().values(blocked_until=None))


def audited(engine, action):
    with engine.connect() as con:
        return con.execute(
            sa.select(audit).where(audit.c.action == action).order_by(audit.c.id)
        ).fetchall()


def user_id(engine, name):
    with engine.connect() as con:
        return con.execute(sa.select(users.c.id).where(users.c.username == name)).scalar_one()


def test_throttled_account_is_refused_with_429_even_for_the_right_password(accounts, make_app):
    app, engine = accounts
    attacker, office = browser_at(app, ATTACKER), browser_at(app, OFFICE)
    for n in range(POLICY.account_throttle_after):
        assert attempt(attacker, "ann", f"guess-{n}").status_code == 401, n
    # The account is throttled, whoever asks and whatever the password.
    for client in (attacker, office):
        r = attempt(client, "ann", PASSWORD)
        assert r.status_code == 429, r.text[:300]
        assert 0 < int(r.headers["Retry-After"]) <= POLICY.first_delay_s
        assert "Too many failed logins" in r.text
    # Kept in the database: another worker (or the app after a restart) refuses it too.
    assert attempt(browser_at(make_app(), OFFICE), "ann", PASSWORD).status_code == 429
    (row,) = audited(engine, "login_throttled")
    assert (row.entity, row.entity_id) == ("user", user_id(engine, "ann"))
    assert row.after == {
        "account": "ann",
        "failures": POLICY.account_throttle_after,
        "retry_after_s": POLICY.first_delay_s,
    }
    # Each further failure doubles the back-off.
    end_backoffs(engine)
    assert attempt(attacker, "ann", "guess-again").status_code == 401
    r = attempt(office, "ann", PASSWORD)
    assert r.status_code == 429
    assert POLICY.first_delay_s < int(r.headers["Retry-After"]) <= 2 * POLICY.first_delay_s
    # Once it has run out, the right password logs in and the account's count starts again.
    end_backoffs(engine)
    assert attempt(office, "ann", PASSWORD).status_code == 303
    for n in range(POLICY.account_throttle_after - 1):
        assert attempt(attacker, "ann", f"guess-{n}").status_code == 401, n


def test_guesses_sent_at_once_to_two_workers_get_no_more_tries(accounts, make_app):
    # Two apps on one database stand for two workers; every guess is in flight at once.
    app, _ = accounts
    workers = [app, make_app()]
    guesses = 4 * POLICY.account_throttle_after
    clients = [browser_at(workers[n % 2], f"192.0.2.{n + 1}") for n in range(guesses)]
    forms = [
        {"username": "ann", "password": f"guess-{n}", "csrf": login_token(c)}
        for n, c in enumerate(clients)
    ]
    with ThreadPoolExecutor(max_workers=guesses) as pool:
        answers = list(pool.map(lambda c, f: c.post("/login", data=f).status_code, clients, forms))
    assert sorted(answers) == [401] * POLICY.account_throttle_after + [429] * (
        guesses - POLICY.account_throttle_after
    )


def test_address_is_throttled_across_names(accounts):
    app, engine = accounts
    attacker = browser_at(app, ATTACKER)
    # One failure per name: no account is throttled, the address is.
    for n in range(POLICY.address_throttle_after):
        assert attempt(attacker, f"user{n}", "wrong-password").status_code == 401, n
    r = attempt(attacker, "bob", PASSWORD)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= POLICY.first_delay_s
    assert attempt(browser_at(app, OFFICE), "bob", PASSWORD).status_code == 303
    (row,) = audited(engine, "login_throttled")
    assert (row.entity, row.after["address"]) == ("address", ATTACKER)
    # The admin's Logins page lists the address, and no account as locked.
    admin = browser_at(app, OFFICE)
    assert attempt(admin, "admin", PASSWORD).status_code == 303
    listing = admin.get("/admin/logins").text
    assert f"<td>address</td><td>{ATTACKER}</td>" in listing
    assert 'name="username"' not in listing


def test_lockout_refuses_the_right_password_until_an_admin_unlocks(accounts):
    app, engine = accounts
    # ann's account and a name without one, each guessed from an address of its own: they are
    # answered alike at every step, so the answers do not tell which name exists.
    attackers = {"ann": browser_at(app, ATTACKER), "nobody": browser_at(app, "203.0.113.8")}
    for n in range(1, POLICY.lockout_after + 1):
        for name, client in attackers.items():
            assert attempt(client, name, f"guess-{n}").status_code == 401, (name, n)
        if POLICY.account_throttle_after <= n < POLICY.lockout_after:
            probes = [attempt(client, name, PASSWORD) for name, client in attackers.items()]
            assert [p.status_code for p in probes] == [429, 429], n
            waits = [int(p.headers["Retry-After"]) for p in probes]
            assert abs(waits[0] - waits[1]) <= 1, (n, waits)
        end_backoffs(engine)
    # Locked: the right password is refused, from anywhere, however long one waits.
    office = browser_at(app, OFFICE)
    for name in ("ann", "nobody"):
        r = attempt(office, name, PASSWORD)
        assert r.status_code == 403 and "locked" in r.text, name
        assert "Retry-After" not in r.headers
    ann = user_id(engine, "ann")
    locked = audited(engine, "login_locked")
    assert [(r.entity_id, r.after["account"]) for r in locked] == [(ann, "ann"), (None, "nobody")]

    # Only an admin sees and lifts it.
    bob = browser_at(app, OFFICE)
    assert attempt(bob, "bob", PASSWORD).status_code == 303
    assert bob.get("/admin/logins").status_code == 403
    bob_token = csrf_of(bob, "/")
    r = bob.post("/admin/logins/unlock", data={"csrf": bob_token, "username": "ann"})
    assert r.status_code == 403
    admin = browser_at(app, OFFICE)
    assert attempt(admin, "admin", PASSWORD).status_code == 303
    listing = admin.get("/admin/logins").text
    locked_table = listing[listing.index('id="locked"') : listing.index('id="throttled"')]
    assert 'name="username" value="ann"' in locked_table
    assert 'name="username" value="nobody"' in locked_table
    token = csrf_of(admin, "/admin/logins")
    r = admin.post("/admin/logins/unlock", data={"csrf": token, "username": "ann"})
    assert r.status_code == 303
    again = admin.post("/admin/logins/unlock", data={"csrf": token, "username": "ann"})
    assert again.status_code == 400 and "is not locked" in again.text
    (lifted,) = audited(engine, "login_unlocked")
    assert (lifted.user_id, lifted.entity_id) == (user_id(engine, "admin"), ann)
    assert lifted.before["account"] == "ann"
    assert lifted.before["failures"] == POLICY.lockout_after
    assert attempt(office, "ann", PASSWORD).status_code == 303
    assert attempt(office, "nobody", PASSWORD).status_code == 403  # still locked


def test_unlock_from_the_command_line(accounts, db_url, dataset):
    app, engine = accounts
    lock_out(engine, "admin")  # the only admin: nobody could unlock them in the app
    assert attempt(browser_at(app, OFFICE), "admin", PASSWORD).status_code == 403
    assert main(["review", "unlock", str(dataset.root), "--db", db_url, "admin"]) == 0
    assert main(["review", "unlock", str(dataset.root), "--db", db_url, "admin"]) == 1
    assert attempt(browser_at(app, OFFICE), "admin", PASSWORD).status_code == 303
    (lifted,) = audited(engine, "login_unlocked")
    assert lifted.user_id is None and lifted.entity_id == user_id(engine, "admin")


def test_wrong_password_takes_as_long_without_an_account(accounts):
    # Each try uses a fresh account or name and its own address, so that no throttling starts;
    # the property is the ratio of medians, each over many tries, interleaved against drift.
    app, engine = accounts
    tries = 25
    for n in range(tries):
        create_user(engine, f"member{n}", PASSWORD)
    timings = {True: [], False: []}
    for n in range(-1, tries):  # n = -1: one untimed warm-up of each
        order = (True, False) if n % 2 else (False, True)
        for exists in order:
            name = f"member{n}" if exists else f"stranger{n}"
            client = browser_at(app, f"10.{int(exists)}.{n % 250}.{n // 250 + 1}")
            data = {"username": name, "password": "wrong-password", "csrf": login_token(client)}
            start = time.perf_counter()
            r = client.post("/login", data=data)
            elapsed = time.perf_counter() - start
            assert r.status_code == 401, (name, r.status_code)
            if n >= 0:
                timings[exists].append(elapsed)
    ratio = statistics.median(timings[False]) / statistics.median(timings[True])
    assert 0.7 <= ratio <= 1.4, (ratio, timings)


def test_login_token_is_bound_to_its_presession(accounts):
    app, _ = accounts
    victim = browser_at(app, OFFICE)
    own = login_token(victim)
    form = {"username": "ann", "password": PASSWORD}
    # A real token, but of another pre-session (another browser's login form).
    other = login_token(browser_at(app, ATTACKER))
    r = victim.post("/login", data={**form, "csrf": other})
    assert r.status_code == 400 and "login form expired" in r.text
    # A cookie and a field made up to match, which a double-submit check accepts: only the
    # server can make the token of a pre-session.
    forged = secrets.token_urlsafe(24)
    for cookie in list(victim.cookies.jar):
        victim.cookies.set(cookie.name, forged, domain=cookie.domain, path=cookie.path)
    r = victim.post("/login", data={**form, "csrf": forged})
    assert r.status_code == 400 and "login form expired" in r.text
    # Control: a form's own token with its own cookie logs in.
    assert own != other
    assert attempt(victim, "ann", PASSWORD).status_code == 303


def test_hsts_with_secure_cookies_only(accounts, make_app):
    plain, _ = accounts
    secure = make_app(secure_cookies=True)
    https = browser_at(secure, OFFICE, base_url="https://testserver")
    http = browser_at(plain, OFFICE)
    for path in ("/login", "/static/style.css", "/", "/no-such-page"):
        assert https.get(path).headers["Strict-Transport-Security"] == "max-age=31536000", path
        assert "Strict-Transport-Security" not in http.get(path).headers, path
    # Signed in over HTTPS (the Secure cookies go back), every page still carries it.
    r = attempt(https, "ann", PASSWORD)
    assert r.status_code == 303 and "Strict-Transport-Security" in r.headers
    assert "secure" in r.headers["set-cookie"].lower()
    page = https.get("/")
    assert page.status_code == 200 and "Strict-Transport-Security" in page.headers
