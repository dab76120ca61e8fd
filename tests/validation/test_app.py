"""The review app in-process: campaigns, reviews, roles, bad input, export and apply.

Runs on SQLite and on the real PostgreSQL server that `.ci/run` starts.
"""

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from validation.app import create_app
from validation.auth import LoginPolicy, create_user, login
from validation.campaigns import CampaignSettings, create_campaign, grow_campaign
from validation.db import audit, connect, items, metadata, reviews
from validation.results import apply_reviews, campaign_results, export_reviews

PASSWORD = "correct-horse"


@pytest.fixture
def app_env(db_url, dataset):
    app = create_app(dataset.root, db_url)
    engine = app.state.engine
    ids = {
        "admin": create_user(engine, "admin", PASSWORD, "admin"),
        "ann": create_user(engine, "ann", PASSWORD),
        "bob": create_user(engine, "bob", PASSWORD),
    }
    # gold_gap 2: with the default 10, longer than this 7-item campaign, a reviewer who answered
    # the source would not be given its gold item before running out of items.
    settings = CampaignSettings(size=6, overlap_share=1.0, gold_share=0.25, seed=3, gold_gap=2)
    c1 = create_campaign(engine, dataset, "one", settings)
    c2 = create_campaign(engine, dataset, "two", CampaignSettings(size=2, seed=4))
    yield app, engine, ids, c1, c2
    engine.dispose()


def client_for(app, name):
    client = TestClient(app, follow_redirects=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": name, "password": PASSWORD, "csrf": csrf})
    assert r.status_code == 303, r.text
    return client


def csrf_of(client, url):
    return re.search(r'name="csrf" value="([^"]+)"', client.get(url).text).group(1)


def item_ids(engine, campaign_id, gold=None):
    q = sa.select(items.c.id).where(items.c.campaign_id == campaign_id).order_by(items.c.position)
    if gold is not None:
        q = q.where(items.c.is_gold.is_(gold))
    with engine.connect() as con:
        return [r.id for r in con.execute(q)]


def count(engine, table):
    with engine.connect() as con:
        return con.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def submit(client, c, i, **fields):
    data = {
        "csrf": csrf_of(client, f"/c/{c}/i/{i}"),
        "completeness": "2",
        "hallucinations": "0",
        "flags": "[]",
        "edited_caption": "",
        **fields,
    }
    return client.post(f"/c/{c}/i/{i}", data=data)


def test_login_required_and_wrong_password(app_env):
    app, *_ = app_env
    client = TestClient(app, follow_redirects=False)
    assert client.get("/c/1/next").status_code == 303
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": "ann", "password": "wrong-pass", "csrf": csrf})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    # Login without the form's token is refused (login CSRF).
    r = client.post("/login", data={"username": "ann", "password": PASSWORD, "csrf": "x"})
    assert r.status_code == 400


def test_review_roundtrip_and_audit(app_env):
    app, engine, _, c1, _ = app_env
    ann = client_for(app, "ann")
    first = item_ids(engine, c1)[0]
    r = ann.get(f"/c/{c1}/next")
    assert r.status_code == 303 and r.headers["location"] == f"/c/{c1}/i/{first}"
    page = ann.get(f"/c/{c1}/i/{first}")
    assert page.status_code == 200 and "Completeness" in page.text
    assert ann.get(f"/c/{c1}/i/{first}/chip/true.png").headers["content-type"] == "image/png"
    assert ann.get(f"/c/{c1}/i/{first}/chip/false.png").content[:4] == b"\x89PNG"
    r = submit(
        ann,
        c1,
        first,
        completeness="3",
        hallucinations="1",
        flags='[{"sentence": 0, "type": "count"}]',
        edited_caption="A corrected caption.",
    )
    assert r.status_code == 303
    r = submit(
        ann,
        c1,
        first,
        completeness="4",
        hallucinations="1",
        flags='[{"sentence": 0, "type": "object"}]',
    )
    assert r.status_code == 303
    with engine.connect() as con:
        rows = con.execute(sa.select(reviews)).fetchall()
        trail = con.execute(
            sa.select(audit.c.action, audit.c.before, audit.c.after)
            .where(audit.c.entity == "review")
            .order_by(audit.c.id)
        ).fetchall()
    assert len(rows) == 1 and rows[0].completeness == 4
    assert [t.action for t in trail] == ["submit_review", "update_review"]
    assert trail[1].before["completeness"] == 3 and trail[1].after["completeness"] == 4
    assert trail[1].before["edited_caption"] == "A corrected caption."


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"completeness": "7"}, "completeness must be 1-6"),
        ({"completeness": "0"}, "completeness must be 1-6"),
        ({"hallucinations": "9"}, "hallucinations must be 0-3"),
        ({"completeness": ""}, "rate completeness"),
        ({"completeness": "abc"}, "completeness must be a whole number 1-6"),
        ({"flags": '[{"sentence": 99, "type": "count"}]', "hallucinations": "1"}, "sentences"),
        (
            {"flags": '[{"sentence": 0, "type": "made_up"}]', "hallucinations": "1"},
            "unknown hallucination type",
        ),
        ({"flags": "{not json"}, "not valid JSON"),
        (
            {"flags": '[{"sentence": 0, "type": "count"}]', "hallucinations": "0"},
            "1 flagged claims",
        ),
        ({"skip_reason": "bored"}, "unknown skip reason"),
        ({"csrf": "forged"}, "security token"),
    ],
)
def test_bad_review_is_refused_and_changes_nothing(app_env, fields, message):
    app, engine, _, c1, _ = app_env
    ann = client_for(app, "ann")
    item = item_ids(engine, c1)[0]
    before = (count(engine, reviews), count(engine, audit))
    data = {
        "csrf": csrf_of(ann, f"/c/{c1}/i/{item}"),
        "completeness": "2",
        "hallucinations": "0",
        "flags": "[]",
        **fields,
    }
    r = ann.post(f"/c/{c1}/i/{item}", data=data)
    assert r.status_code == 400
    assert message in r.text
    assert (count(engine, reviews), count(engine, audit)) == before


def test_item_from_another_campaign_and_paths(app_env):
    app, engine, _, c1, c2 = app_env
    ann = client_for(app, "ann")
    other = item_ids(engine, c2)[0]
    before = count(engine, reviews)
    csrf = csrf_of(ann, f"/c/{c1}/i/{item_ids(engine, c1)[0]}")
    r = ann.post(
        f"/c/{c1}/i/{other}", data={"csrf": csrf, "completeness": "2", "hallucinations": "0"}
    )
    assert r.status_code == 403 and "not yours to answer" in r.text  # as any item not given
    assert ann.get(f"/c/{c1}/i/{other}").status_code == 404
    assert count(engine, reviews) == before
    first = item_ids(engine, c1)[0]
    for path in (
        f"/c/{c1}/i/{first}/chip/..%2F..%2Frun.json",
        f"/c/{c1}/i/{first}/chip/../../../run.json",
        f"/c/{c1}/i/{first}/chip/%2e%2e%2frun.png",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/../app.py",
    ):
        r = ann.get(path)
        assert r.status_code == 404, path
        assert b"config_hash" not in r.content and b"[project]" not in r.content


def test_reviewer_sees_only_own_answers_and_no_admin(app_env):
    app, engine, _, c1, _ = app_env
    ann, bob = client_for(app, "ann"), client_for(app, "bob")
    item = item_ids(engine, c1)[0]
    submit(ann, c1, item, comment="ann-was-here", edited_caption="Ann's secret edit.")
    page = bob.get(f"/c/{c1}/i/{item}")
    assert page.status_code == 200
    assert "ann-was-here" not in page.text and "secret edit" not in page.text
    for url in (
        "/admin",
        f"/admin/c/{c1}",
        f"/admin/c/{c1}/reviews",
        f"/admin/c/{c1}/export.parquet",
        "/admin/audit",
    ):
        assert bob.get(url).status_code == 403, url
    csrf = csrf_of(bob, "/")
    r = bob.post(
        "/admin/users",
        data={"csrf": csrf, "username": "mallory", "password": "12345678", "role": "admin"},
    )
    assert r.status_code == 403
    admin = client_for(app, "admin")
    assert "secret edit" in admin.get(f"/admin/c/{c1}/reviews").text


# -- CSRF: every state-changing route refuses a forged, missing or borrowed token ---------------

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def state_changing_routes(app):
    """(method, path template) of every route that can change state, read from the app itself.

    FastAPI 0.143 keeps included routers as one entry each in ``app.routes``;
    ``iter_route_contexts`` (what its OpenAPI generator walks) flattens them to the real routes.
    """
    return {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method in UNSAFE_METHODS
    }


@dataclass(frozen=True)
class PostCase:
    """A valid request to one route: who sends it, where, and the form without its token."""

    actor: str | None  # the signed-in user; None: the login form (pre-session token)
    url: Callable[[object, int, int], str]  # (engine, campaign 1, campaign 2) -> URL
    form: dict[str, str]
    refusal: str  # the text of the 400 page
    prepare: Callable[[object], None] | None = None  # (engine): the state the request needs


def lock_out(engine, name):
    """Lock an account: one failed login under a policy that locks at the first failure."""
    policy = LoginPolicy(lockout_after=1)
    login(engine, name, "wrong-password", timedelta(hours=1), address="192.0.2.1", policy=policy)


TOKEN_REFUSED = "security token is wrong or missing"

POST_CASES = {
    ("POST", "/login"): PostCase(
        None,
        lambda engine, c1, c2: "/login",
        {"username": "ann", "password": PASSWORD},
        "login form expired",
    ),
    ("POST", "/logout"): PostCase("ann", lambda engine, c1, c2: "/logout", {}, TOKEN_REFUSED),
    ("POST", "/c/{campaign_id}/i/{item_id}"): PostCase(
        "ann",
        lambda engine, c1, c2: f"/c/{c1}/i/{item_ids(engine, c1)[0]}",
        {"completeness": "2", "hallucinations": "0", "flags": "[]", "comment": "forged?"},
        TOKEN_REFUSED,
    ),
    ("POST", "/admin/users"): PostCase(
        "admin",
        lambda engine, c1, c2: "/admin/users",
        {"username": "mallory", "password": "mallory-password", "role": "admin"},
        TOKEN_REFUSED,
    ),
    ("POST", "/admin/campaigns"): PostCase(
        "admin",
        lambda engine, c1, c2: "/admin/campaigns",
        {"name": "three", "size": "2", "seed": "9", "gold_share": "0"},
        TOKEN_REFUSED,
    ),
    ("POST", "/admin/c/{campaign_id}/grow"): PostCase(
        "admin", lambda engine, c1, c2: f"/admin/c/{c2}/grow", {"size": "3"}, TOKEN_REFUSED
    ),
    ("POST", "/admin/logins/unlock"): PostCase(
        "admin",
        lambda engine, c1, c2: "/admin/logins/unlock",
        {"username": "bob"},
        TOKEN_REFUSED,
        prepare=lambda engine: lock_out(engine, "bob"),
    ),
}


def db_snapshot(engine):
    """Every row of every table (sessions and the audit trail included)."""
    with engine.connect() as con:
        return {
            table.name: sorted(repr(tuple(row)) for row in con.execute(sa.select(table)))
            for table in metadata.sorted_tables
        }


def login_token(client):
    """The login form's hidden token (its twin is the cookie the GET set on ``client``)."""
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def test_every_state_changing_route_has_a_forgery_case(app_env):
    # A new POST (PUT, DELETE...) route fails here until POST_CASES covers it.
    app, *_ = app_env
    assert state_changing_routes(app) == set(POST_CASES)


@pytest.mark.parametrize("route", sorted(POST_CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_forged_csrf_token_is_refused_and_changes_nothing(app_env, route):
    app, engine, _, c1, c2 = app_env
    case = POST_CASES[route]
    url = case.url(engine, c1, c2)
    if case.actor is None:
        victim = TestClient(app, follow_redirects=False)
        own = login_token(victim)
        other = login_token(TestClient(app))  # another browser's login form
        cookieless = TestClient(app, follow_redirects=False)  # never opened the login form
        attempts = [
            ("missing", victim, None),
            ("empty", victim, ""),
            ("forged", victim, secrets.token_urlsafe(24)),
            ("other browser's token", victim, other),
            ("own token truncated", victim, own[:-1]),
            ("own token extended", victim, own + "A"),
            ("no cookie, missing", cookieless, None),
            ("no cookie, empty", cookieless, ""),
            ("no cookie, someone's token", cookieless, other),
        ]
    else:
        victim = client_for(app, case.actor)
        own = csrf_of(victim, "/")
        # The same user's other session, and another user's session: tokens an attacker who
        # has an account (or an old session) could know, but not this session's.
        other_session = csrf_of(client_for(app, case.actor), "/")
        other_user = csrf_of(client_for(app, "bob"), "/")
        assert len({own, other_session, other_user}) == 3
        attempts = [
            ("missing", victim, None),
            ("empty", victim, ""),
            ("forged", victim, secrets.token_urlsafe(32)),
            ("other session of the same user", victim, other_session),
            ("other user's session", victim, other_user),
            ("own token truncated", victim, own[:-1]),
            ("own token extended", victim, own + "A"),
        ]
    if case.prepare is not None:
        case.prepare(engine)
    before = db_snapshot(engine)
    for name, client, token in attempts:
        data = case.form if token is None else {**case.form, "csrf": token}
        r = client.post(url, data=data)
        assert r.status_code == 400, (name, r.status_code, r.text[:300])
        assert case.refusal in r.text, name
        assert db_snapshot(engine) == before, name
    # Control: the same request with the session's own token goes through and changes the
    # database, so each refusal above was the token's doing and not a bad form.
    r = victim.post(url, data={**case.form, "csrf": own})
    assert r.status_code == 303, r.text[:300]
    assert db_snapshot(engine) != before


def test_expired_session_and_logout(app_env):
    app, engine, *_ = app_env
    ann = client_for(app, "ann")
    assert ann.get("/").status_code == 200
    from validation.db import sessions

    with engine.begin() as con:
        con.execute(sessions.update().values(expires_at=sessions.c.created_at))
    assert ann.get("/").status_code == 303  # expired: back to login
    ann = client_for(app, "ann")
    csrf = csrf_of(ann, "/")
    assert ann.post("/logout", data={"csrf": csrf}).status_code == 303
    assert ann.get("/").status_code == 303


def test_dashboard_agreement_export_and_apply(app_env, tmp_path):
    app, engine, _, c1, _ = app_env
    ann, bob = client_for(app, "ann"), client_for(app, "bob")
    real = item_ids(engine, c1, gold=False)
    gold = item_ids(engine, c1, gold=True)
    assert len(real) == 6 and len(gold) >= 1
    ratings = {"ann": [1, 2, 3, 4, 5, 6], "bob": [1, 2, 3, 4, 6, 6]}
    with engine.connect() as con:
        planted = con.execute(sa.select(items.c.gold).where(items.c.id == gold[0])).scalar_one()
    catch = {
        "hallucinations": "1",
        "flags": f'[{{"sentence": {planted["sentence"]}, "type": "object"}}]',
    }
    for name, client in (("ann", ann), ("bob", bob)):
        # Each answers the items in the order they are given (an answer to any other is 403).
        while (r := client.get(f"/c/{c1}/next")).status_code == 303:
            item = int(r.headers["location"].rsplit("/", 1)[1])
            if item in gold:  # ann flags the planted lie, bob misses it
                answer = catch if name == "ann" else {}
            else:
                answer = {"completeness": str(ratings[name][real.index(item)])}
            assert submit(client, c1, item, **answer).status_code == 303
    res = campaign_results(engine, c1, bootstrap=200)
    assert res.items_complete == 6
    kappa = res.kappa[0][2]
    # po = 5/6; pe = 4 x (1/6)(1/6) + (1/6)(2/6) = 1/6 (rating 6: ann 1/6, bob 2/6); kappa 0.8
    assert kappa.value == pytest.approx((5 / 6 - 1 / 6) / (1 - 1 / 6))
    alpha = res.agreement["completeness (ordinal alpha)"]
    assert alpha.n == 6 and 0.9 < alpha.value < 1.0
    gold_acc = {r["reviewer"]: r["gold_accuracy"] for r in res.reviewers}
    assert gold_acc == {"ann": 1.0, "bob": 0.0}
    admin = client_for(app, "admin")
    page = admin.get(f"/admin/c/{c1}")
    assert page.status_code == 200 and "ordinal alpha" in page.text and "<svg" in page.text
    export = admin.get(f"/admin/c/{c1}/export.parquet")
    out = tmp_path / "x.parquet"
    out.write_bytes(export.content)
    table = pq.read_table(out)
    assert table.num_rows == 14 and set(table.column("reviewer").to_pylist()) == {"ann", "bob"}
    assert export_reviews(engine, tmp_path / "all.parquet") == 14
    # apply: review results beside the shards, pixel shards untouched.
    ds = app.state.dataset
    before = {p.name: p.read_bytes() for p in (ds.root / "shards").glob("*.parquet")}
    counts = apply_reviews(engine, ds)
    assert counts["accepted"] + counts.get("rejected", 0) == 6
    assert {p.name: p.read_bytes() for p in (ds.root / "shards").glob("*.parquet")} == before
    applied = pq.read_table(list((ds.root / "shards" / "_review").glob("*_review.parquet")))
    assert sorted(applied.column("sample_id").to_pylist()) == sorted(
        set(applied.column("sample_id").to_pylist())
    )
    assert apply_reviews(engine, ds) == counts  # idempotent


@pytest.fixture
def engine(db_url):
    engine = connect(db_url)
    yield engine
    engine.dispose()


def test_campaigns_are_seeded_stratified_and_grow(engine, dataset):
    settings = CampaignSettings(size=10, seed=5, gold_share=0.2)
    a = create_campaign(engine, dataset, "a", settings)
    b = create_campaign(engine, dataset, "b", settings.model_copy(update={"size": 4}))
    grow_campaign(engine, dataset, b, 10)
    c = create_campaign(engine, dataset, "c", settings.model_copy(update={"seed": 6}))

    def listing(cid):
        with engine.connect() as con:
            return [
                tuple(r)
                for r in con.execute(
                    sa.select(
                        items.c.position, items.c.sample_id, items.c.is_gold, items.c.needed_reviews
                    )
                    .where(items.c.campaign_id == cid)
                    .order_by(items.c.position)
                )
            ]

    assert listing(a) == listing(b)  # grown to 10 == drawn at 10
    assert listing(a) != listing(c)
    real = [r for r in listing(a) if not r[2]]
    assert 5 <= len(real) <= 10  # the small dataset may hold fewer captioned samples
    assert sum(1 for r in listing(a) if r[2]) == len(real) // 5  # one gold item per 5 draws
    with engine.connect() as con:
        strata = [
            r.stratum
            for r in con.execute(sa.select(items.c.stratum).where(items.c.campaign_id == a))
        ]
    # The overlay: Overture features clipped to each chip, in pixel coordinates.
    with engine.connect() as con:
        drawn = [
            r.features
            for r in con.execute(sa.select(items.c.features).where(items.c.campaign_id == a))
        ]
    feats = [f for fs in drawn for f in fs]
    assert {f["theme"] for f in feats} & {"water", "segment", "building"}
    points = [p for f in feats if f["geometry"] == "LineString" for p in f["coords"]]
    assert points and all(-30 <= v <= 300 for p in points for v in p)
    # Equal allocation spreads a small campaign over strata: several seasons appear.
    assert len({s["season"] for s in strata}) >= 2
    with pytest.raises(ValueError, match="larger size"):
        grow_campaign(engine, dataset, a, 5)
    with pytest.raises(ValueError, match="exists"):
        create_campaign(engine, dataset, "a", settings)
