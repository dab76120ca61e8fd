"""Gaming and malformed input against the review app's items and answers, over HTTP.

Gold items are placed away from their source in every reviewer's own order and reworded so that
a diff with the source does not point at the planted sentence; a reviewer answers only the item
given to them (anything else is 403 and changes nothing); every form field is parsed within
bounds (deep JSON, huge bodies, over-long comments, non-ASCII digits are 400 or 413, never 500).
Runs on SQLite and on the real PostgreSQL server, as tests/validation/test_app.py does.
"""

import dataclasses
import random
import re
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipeline.caption.claims import known_names
from pipeline.caption.grounding import extract_claims, unsupported_claims
from pipeline.core.types import ChipStats, MapContext
from tests.conftest import review_postgres_url
from tests.validation.test_app import client_for, csrf_of, db_snapshot, state_changing_routes
from validation.app import create_app
from validation.auth import create_user
from validation.campaigns import (
    CampaignSettings,
    create_campaign,
    grow_campaign,
    item_order,
    next_item,
)
from validation.dataset import split_sentences
from validation.db import (
    campaigns,
    connect,
    database_url,
    items,
    metadata,
    now,
    reviews,
    users,
)
from validation.deps import MAX_FORM_BYTES, BadForm, bounded_json
from validation.routes.review import MAX_CAPTION, MAX_COMMENT

REVIEWERS = ("ann", "bob", "cat")


@pytest.fixture
def app(db_url, dataset):
    app = create_app(dataset.root, db_url)
    for name in REVIEWERS:
        create_user(app.state.engine, name, "correct-horse")
    yield app
    app.state.engine.dispose()


def ids_by_position(engine, campaign_id, *, gold=None):
    query = sa.select(items.c.id).where(items.c.campaign_id == campaign_id)
    if gold is not None:
        query = query.where(items.c.is_gold.is_(gold))
    with engine.connect() as con:
        return list(con.execute(query.order_by(items.c.position)).scalars())


def answer(client, campaign_id, item_id, **fields):
    """POST an answer (a valid one unless ``fields`` say otherwise) with the session's token."""
    form = {"csrf": csrf_of(client, "/"), "completeness": "2", "hallucinations": "0", **fields}
    return client.post(f"/c/{campaign_id}/i/{item_id}", data=form)


def given(client, campaign_id):
    """The id of the item the reviewer is given now, or None when they are done."""
    r = client.get(f"/c/{campaign_id}/next")
    return int(r.headers["location"].rsplit("/", 1)[1]) if r.status_code == 303 else None


def own_orders(engine, campaign_id):
    """Each reviewer's own order: (sample id, is gold) of their answers, as they gave them."""
    query = (
        sa.select(users.c.username, items.c.sample_id, items.c.is_gold)
        .select_from(reviews.join(items, items.c.id == reviews.c.item_id).join(users))
        .where(items.c.campaign_id == campaign_id)
        .order_by(reviews.c.id)
    )
    orders = defaultdict(list)
    with engine.connect() as con:
        for name, sample, is_gold in con.execute(query):
            orders[name].append((sample, is_gold))
    return orders


def closest_twins(order):
    """The smallest distance between a gold item and its source in one order (None: no pair)."""
    at = {key: i for i, key in enumerate(order)}
    gaps = [abs(i - at[(s, False)]) for (s, gold), i in at.items() if gold and (s, False) in at]
    return min(gaps, default=None)


# -- gold placement ------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [1, 5, 10, 25])
def test_gold_items_are_placed_away_from_their_source(gap):
    # Campaign order, many seeds: more than gold_gap items between a gold item and its source
    # (whenever the campaign has room: 8 * gap + 1 draws), at seeded distances on both sides.
    distances, sides = set(), set()
    for seed in range(40):
        for share in (0.05, 0.2, 0.5):
            settings = CampaignSettings(seed=seed, gold_share=share, gold_gap=gap)
            draws = max(8 * gap + 1, 120)
            order = item_order(draws, settings)
            assert sorted(d for d, gold in order if not gold) == list(range(draws))
            at = {key: i for i, key in enumerate(order)}
            golds = [d for d, gold in order if gold]
            assert len(golds) == len(range(round(1 / share) - 1, draws, round(1 / share)))
            for d in golds:
                distance = at[(d, True)] - at[(d, False)]
                assert abs(distance) > gap, (seed, share, d, distance)
                distances.add(abs(distance))
                sides.add(distance > 0)
    assert sides == {True, False}
    assert len(distances) > 2 * gap  # seeded, not one fixed offset


def test_a_grown_campaign_keeps_gold_items_away(db_url, dataset):
    engine = connect(db_url)
    settings = CampaignSettings(size=3, seed=1, gold_share=0.5, gold_gap=1)
    small = create_campaign(engine, dataset, "small", settings)
    grow_campaign(engine, dataset, small, 8)
    whole = create_campaign(engine, dataset, "whole", settings.model_copy(update={"size": 8}))

    def listing(cid):
        with engine.connect() as con:
            return con.execute(
                sa.select(items.c.position, items.c.sample_id, items.c.is_gold)
                .where(items.c.campaign_id == cid)
                .order_by(items.c.position)
            ).fetchall()

    assert listing(small) == listing(whole)
    order = [(r.sample_id, r.is_gold) for r in listing(whole)]
    assert closest_twins(order) > 1  # 8 draws: room for gap 1 (8 * 1 + 1 would be the bound)
    engine.dispose()


@pytest.mark.parametrize("seed", range(4))
def test_reviewers_never_meet_a_gold_item_near_its_source(app, dataset, seed):
    # Three reviewers answer in a seeded random interleaving, over HTTP, until nothing is left:
    # in each one's own order a gold item and its source are more than gold_gap apart.
    engine = app.state.engine
    settings = CampaignSettings(size=8, seed=seed, gold_share=0.5, overlap_share=0.3, gold_gap=2)
    cid = create_campaign(engine, dataset, "c", settings)
    clients = {name: client_for(app, name) for name in REVIEWERS}
    rng = random.Random(seed)
    active = list(REVIEWERS)
    while active:
        name = rng.choice(active)
        item = given(clients[name], cid)
        if item is None:
            active.remove(name)
            continue
        fields = {"skip_reason": "unsure"} if rng.random() < 0.1 else {}
        assert answer(clients[name], cid, item, **fields).status_code == 303
    met_gold = 0
    for name, order in own_orders(engine, cid).items():
        closest = closest_twins(order)
        assert closest is None or closest > settings.gold_gap, (name, order)
        met_gold += sum(gold for _, gold in order)
    assert met_gold > 0
    with engine.connect() as con:  # every real item got its planned answers
        assert not con.execute(
            sa.select(items.c.id).where(
                items.c.campaign_id == cid,
                items.c.is_gold.is_(False),
                sa.select(sa.func.count())
                .where(reviews.c.item_id == items.c.id, reviews.c.skipped.is_(False))
                .scalar_subquery()
                < items.c.needed_reviews,
            )
        ).first()


def test_many_reviewers_on_a_long_campaign_never_meet_gold_near_its_source(db_url):
    # The same at scale, with stored items laid out by item_order (no dataset needed): 240 draws,
    # one gold item per 5, gold_gap 10, four reviewers answering through next_item.
    engine = connect(db_url)
    settings = CampaignSettings(size=240, seed=7, gold_share=0.2, overlap_share=0.3, gold_gap=10)
    uids = [create_user(engine, name, "correct-horse") for name in ("r1", "r2", "r3", "r4")]
    overlap = random.Random(7)
    needed = [2 if overlap.random() < settings.overlap_share else 1 for _ in range(240)]
    with engine.begin() as con:
        cid = con.execute(
            campaigns.insert().values(
                name="long",
                dataset="-",
                seed=7,
                settings=settings.model_dump(),
                created_at=now(),
            )
        ).inserted_primary_key[0]
        con.execute(
            items.insert(),
            [
                {
                    "campaign_id": cid,
                    "position": position,
                    "sample_id": f"s_{draw:016x}",
                    "shard": 0,
                    "stratum": {},
                    "caption": "A lake.",
                    "sentences": ["A lake."],
                    "facts": [],
                    "features": [],
                    "needed_reviews": 0 if gold else needed[draw],
                    "is_gold": gold,
                    "gold": {"sentence": 0, "type": "object"} if gold else None,
                }
                for position, (draw, gold) in enumerate(item_order(240, settings))
            ],
        )
    rng = random.Random(1)
    active = list(uids)
    while active:
        uid = rng.choice(active)
        item = next_item(engine, cid, uid)
        if item is None:
            active.remove(uid)
            continue
        with engine.begin() as con:
            con.execute(
                reviews.insert().values(
                    item_id=item,
                    user_id=uid,
                    completeness=2,
                    hallucinations=0,
                    flags=[],
                    skipped=rng.random() < 0.1,
                    submitted_at=now(),
                    updated_at=now(),
                )
            )
    orders = own_orders(engine, cid)
    assert len(orders) == 4
    for name, order in orders.items():
        assert closest_twins(order) > settings.gold_gap, name
        # Nearly every gold item is met: only those whose source the reviewer answered among
        # their last gold_gap items when nothing else was left for them are not.
        assert sum(gold for _, gold in order) >= 0.9 * 48, name
    engine.dispose()


def _grounding_inputs(dataset, sample_ids):
    """MapContext, ChipStats and known names of samples, rebuilt from their shard rows."""
    stats_fields = [f.name for f in dataclasses.fields(ChipStats)]
    columns = ["sample_id", "caption", "context", "classes", "tags", "names", *stats_fields]
    out = {}
    for shard, table in dataset.summaries():
        present = set(table.column("sample_id").to_pylist()) & set(sample_ids)
        for sid, row in dataset.rows(shard, present, columns).items():
            ctx = MapContext.from_row(row["context"], row["classes"], row["tags"], row["names"])
            out[sid] = (ctx, ChipStats(**{f: row[f] for f in stats_fields}))
    return out


def test_gold_captions_are_reworded_and_their_plant_is_gradeable(db_url, dataset):
    engine = connect(db_url)
    golds = []
    for seed in range(6):
        settings = CampaignSettings(size=8, seed=seed, gold_share=0.5, gold_gap=1)
        cid = create_campaign(engine, dataset, f"c{seed}", settings)
        with engine.connect() as con:
            rows = con.execute(sa.select(items).where(items.c.campaign_id == cid)).fetchall()
        source = {r.sample_id: r for r in rows if not r.is_gold}
        golds += [(r, source[r.sample_id]) for r in rows if r.is_gold]
    assert len(golds) >= 12
    grounding = _grounding_inputs(dataset, {g.sample_id for g, _ in golds})
    planted_texts = set()
    for gold, src in golds:
        at = gold.gold["sentence"]
        planted = gold.sentences[at]
        assert planted == gold.gold["text"] and at >= 1  # never the opening sentence
        assert split_sentences(gold.caption) == gold.sentences
        rest = gold.sentences[:at] + gold.sentences[at + 1 :]
        assert len(rest) == len(src.sentences)
        # Rephrased, not the source plus a sentence: no source sentence is shown unchanged, so a
        # sentence diff marks every sentence as new, the planted one among them.
        assert not set(src.sentences) & set(gold.sentences), (src.sentences, gold.sentences)
        ctx, stats = grounding[gold.sample_id]
        # The grounding check grades the plant (the map or the pixels contradict it) ...
        assert unsupported_claims(planted, ctx, stats), planted
        # ... and the rewording keeps every other claim (and adds none).
        names = known_names(ctx)
        assert set(extract_claims(" ".join(rest), names)) == set(
            extract_claims(" ".join(src.sentences), names)
        )
        assert unsupported_claims(" ".join(rest), ctx, stats) == unsupported_claims(
            src.caption, ctx, stats
        )
        planted_texts.add(planted)
    assert len(planted_texts) > 4  # many phrasings, not a handful a reviewer learns
    engine.dispose()


# -- answers only to the item given --------------------------------------------------------------


def test_answers_to_items_not_given_are_403_and_change_nothing(app, dataset):
    engine = app.state.engine
    # One answer per item (no overlap), no gold: every item is one reviewer's.
    solo = create_campaign(
        engine, dataset, "solo", CampaignSettings(size=6, overlap_share=0.0, gold_share=0.0)
    )
    other = create_campaign(engine, dataset, "other", CampaignSettings(size=2, seed=9))
    ann, bob = client_for(app, "ann"), client_for(app, "bob")
    first, second, third = ids_by_position(engine, solo)[:3]
    assert given(ann, solo) == first

    def refused(client, campaign_id, item_id, **fields):
        before = db_snapshot(engine)
        r = answer(client, campaign_id, item_id, **fields)
        assert r.status_code == 403, (campaign_id, item_id, r.status_code)
        assert "not yours to answer" in r.text
        assert db_snapshot(engine) == before  # no review, no audit row

    refused(ann, solo, second)  # not given to her yet: she cannot choose her items
    refused(ann, solo, third, skip_reason="unsure")
    assert answer(ann, solo, first).status_code == 303
    refused(bob, solo, first)  # ann's item, with all its planned answers
    refused(bob, solo, max(ids_by_position(engine, other)) + 1000)  # no such item
    refused(bob, solo, ids_by_position(engine, other)[0])  # another campaign's item
    refused(bob, 10_000, first)  # no such campaign
    # Changing one's own answer is allowed, even once the item has all its answers.
    assert answer(ann, solo, first, completeness="5").status_code == 303
    # A skip does not count as an answer; turned into a rating once others have answered the
    # item it would add one more than planned.
    assert given(ann, solo) == second
    assert answer(ann, solo, second, skip_reason="unsure").status_code == 303
    assert given(bob, solo) == second
    assert answer(bob, solo, second).status_code == 303
    refused(ann, solo, second)
    assert answer(ann, solo, second, skip_reason="cloud").status_code == 303  # still a skip
    with engine.connect() as con:
        counted = con.execute(
            sa.select(sa.func.count()).where(
                reviews.c.item_id.in_([first, second]), reviews.c.skipped.is_(False)
            )
        ).scalar_one()
    assert counted == 2  # one answer each, as planned


WAITING_FOR_A_ROW = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND wait_event = 'transactionid'"
)
"""Sessions waiting for a row another transaction holds (it waits on that transaction's id)."""


@pytest.fixture
def pg_app(dataset):
    """The app on the real PostgreSQL server alone (a fresh schema), with ann and bob."""
    url = database_url(review_postgres_url(), None)
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    app = create_app(dataset.root, url)
    for name in ("ann", "bob"):
        create_user(app.state.engine, name, "correct-horse")
    yield app
    app.state.engine.dispose()


def test_two_answers_to_the_last_place_of_an_item_are_served_in_turn(pg_app, dataset):
    # PostgreSQL: the answer's check and write hold the item's row, so a second reviewer's
    # answer waits for the first and then finds the item full. Ann's transaction is held open
    # here by hand; bob's request must wait for it (pg_stat_activity), then be refused.
    app = pg_app
    engine = app.state.engine
    cid = create_campaign(
        engine, dataset, "solo", CampaignSettings(size=2, overlap_share=0.0, gold_share=0.0)
    )
    ann, bob = client_for(app, "ann"), client_for(app, "bob")
    item = given(ann, cid)
    assert given(bob, cid) == item
    with engine.connect() as con:
        ann_id = con.execute(sa.select(users.c.id).where(users.c.username == "ann")).scalar_one()
    token = csrf_of(bob, "/")
    form = {"csrf": token, "completeness": "2", "hallucinations": "0"}
    with ThreadPoolExecutor(1) as pool:
        with engine.connect() as con, con.begin():
            con.execute(sa.select(items.c.id).where(items.c.id == item).with_for_update())
            bobs = pool.submit(bob.post, f"/c/{cid}/i/{item}", data=form)
            waiting = 0
            for _ in range(600):  # bob's request reaches the lock (a minute at most)
                # A new transaction each time: PostgreSQL keeps one activity snapshot per one.
                with engine.connect() as watch:
                    waiting = watch.execute(WAITING_FOR_A_ROW).scalar_one()
                if waiting or bobs.done():
                    break
                threading.Event().wait(0.1)
            assert waiting and not bobs.done(), (
                "bob's answer did not wait for ann's",
                bobs.done() and bobs.result().status_code,
            )
            con.execute(
                reviews.insert().values(
                    item_id=item,
                    user_id=ann_id,
                    completeness=3,
                    hallucinations=0,
                    flags=[],
                    skipped=False,
                    submitted_at=now(),
                    updated_at=now(),
                )
            )
        # Ann's answer is committed and the row released: bob's request goes on.
        assert bobs.result().status_code == 403
    with engine.connect() as con:
        answers = con.execute(sa.select(reviews.c.user_id).where(reviews.c.item_id == item))
        assert answers.scalars().all() == [ann_id]


def test_pages_and_chips_of_items_not_given_are_403(app, dataset):
    engine = app.state.engine
    solo = create_campaign(
        engine, dataset, "solo", CampaignSettings(size=4, overlap_share=0.0, gold_share=0.5)
    )
    ann, bob = client_for(app, "ann"), client_for(app, "bob")
    first = given(ann, solo)
    for path in ("", "/chip/true.png"):
        assert ann.get(f"/c/{solo}/i/{first}{path}").status_code == 200
    assert answer(ann, solo, first).status_code == 303
    assert ann.get(f"/c/{solo}/i/{first}").status_code == 200  # her own answer, to change
    not_given = [i for i in ids_by_position(engine, solo) if i not in (first, given(bob, solo))]
    for item in [first, *not_given]:  # ann's, and items bob was not given (gold items too)
        for path in ("", "/chip/true.png", "/chip/false.png"):
            r = bob.get(f"/c/{solo}/i/{item}{path}")
            assert r.status_code == 403, (item, path)
            assert b"not given to you" in r.content


# -- bounded parsing -----------------------------------------------------------------------------


@pytest.fixture
def ann_at_her_item(app, dataset):
    """(client, campaign, item): ann signed in, at the item she is given."""
    engine = app.state.engine
    cid = create_campaign(engine, dataset, "c", CampaignSettings(size=2, gold_share=0.0))
    ann = client_for(app, "ann")
    return ann, cid, given(ann, cid)


def assert_refused(engine, client, cid, item, status, message, **fields):
    before = db_snapshot(engine)
    r = answer(client, cid, item, **fields)
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert message in r.text, r.text[-600:]
    assert db_snapshot(engine) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "flags: 200000 characters, the limit is 16384"),
        ("[" * 3_000 + "]" * 3_000, "flags: nested more than 2 levels deep"),
        ('[{"sentence": ' + "1" * 5_000 + ', "type": "count"}]', "flags: not valid JSON"),
        ('[{"sentence": 0, "type": ["count"]}]', "flags: nested more than 2 levels deep"),
    ],
    ids=["100000 deep", "3000 deep", "5000-digit number", "list as a type"],
)
def test_flags_json_is_bounded(app, ann_at_her_item, flags, message):
    ann, cid, item = ann_at_her_item
    assert_refused(app.state.engine, ann, cid, item, 400, message, flags=flags, hallucinations="1")


def test_json_depth_counts_brackets_outside_strings_only():
    assert bounded_json("f", '["[[[", "\\"[{"]', max_chars=100, max_depth=1) == ["[[[", '"[{']
    assert bounded_json("f", '[{"a": []}]', max_chars=100, max_depth=3) == [{"a": []}]
    for text, message in (
        ('[{"a": []}]', "f: nested more than 2 levels deep"),
        ("[" * 50, "f: nested more than 2 levels deep"),
        ('["a"' + ", 1" * 40 + "]", "f: 125 characters, the limit is 100"),
        ("[01]", "f: not valid JSON"),
    ):
        with pytest.raises(BadForm, match=re.escape(message)):
            bounded_json("f", text, max_chars=100, max_depth=2)


def test_oversized_body_is_413_before_it_is_read(app, ann_at_her_item):
    ann, cid, item = ann_at_her_item
    huge = "x" * (MAX_FORM_BYTES + 1)
    assert_refused(app.state.engine, ann, cid, item, 413, "larger than 1024 KiB", comment=huge)
    # The same without a Content-Length (chunked): counted as it arrives.
    before = db_snapshot(app.state.engine)
    body = f"csrf={csrf_of(ann, '/')}&completeness=2&hallucinations=0&comment=".encode()

    def chunks():
        yield body
        for _ in range(40):
            yield b"x" * 65_536

    r = ann.post(
        f"/c/{cid}/i/{item}",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and "larger than 1024 KiB" in r.text
    assert db_snapshot(app.state.engine) == before


def test_every_state_changing_route_refuses_an_oversized_body(app):
    # Login, logout, admin and review forms alike: the size is checked before anything is
    # parsed or authorised, so an anonymous client is enough.
    before = db_snapshot(app.state.engine)
    client = TestClient(app, follow_redirects=False)
    huge = b"x" * (MAX_FORM_BYTES + 1)
    routes = state_changing_routes(app)
    assert ("POST", "/login") in routes and any(p.startswith("/admin") for _, p in routes)
    for method, template in sorted(routes):
        path = re.sub(r"\{[^}]+\}", "1", template)
        r = client.request(
            method,
            path,
            content=huge,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413, (method, template, r.status_code)
    assert db_snapshot(app.state.engine) == before


def test_overlong_comment_is_400_and_the_limits_are_on_the_page(app, ann_at_her_item):
    ann, cid, item = ann_at_her_item
    engine = app.state.engine
    page = ann.get(f"/c/{cid}/i/{item}").text
    assert re.search(rf'<input name="comment"[^>]* maxlength="{MAX_COMMENT}"', page)
    assert re.search(rf'<textarea name="edited_caption"[^>]* maxlength="{MAX_CAPTION}"', page)
    for length in (MAX_COMMENT + 1, 1_000_000):  # the 1 MB comment: refused, not cut
        message = f"the comment has {length} characters; the limit is {MAX_COMMENT}"
        assert_refused(engine, ann, cid, item, 400, message, comment="c" * length)
    long_edit = "An edited caption. " * 300
    message = f"the edited caption has {len(long_edit.strip())} characters; the limit is 4000"
    assert_refused(engine, ann, cid, item, 400, message, edited_caption=long_edit)
    # Control: at the limit, with ASCII numbers, the answer is saved whole.
    r = answer(ann, cid, item, comment="c" * MAX_COMMENT, completeness="3", seconds="12.5")
    assert r.status_code == 303
    with engine.connect() as con:
        row = con.execute(sa.select(reviews.c.comment, reviews.c.completeness, reviews.c.seconds))
        assert tuple(row.one()) == ("c" * MAX_COMMENT, 3, 12.5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"completeness": "\uff13"}, "completeness must be a whole number 1-6"),  # full-width 3
        ({"completeness": "\u0663"}, "completeness must be a whole number 1-6"),  # Arabic-Indic 3
        ({"completeness": "\u06f3"}, "completeness must be a whole number 1-6"),  # Persian 3
        ({"completeness": "\u0969"}, "completeness must be a whole number 1-6"),  # Devanagari 3
        ({"completeness": " 3"}, "completeness must be a whole number 1-6"),
        ({"completeness": "+3"}, "completeness must be a whole number 1-6"),
        ({"completeness": "3\n"}, "completeness must be a whole number 1-6"),
        ({"hallucinations": "\u0660"}, "hallucinations must be a whole number 0-3"),
        ({"hallucinations": "0_0"}, "hallucinations must be a whole number 0-3"),
        ({"seconds": "\u0661\u0662"}, "seconds must be a number like 12.5"),
        ({"seconds": "nan"}, "seconds must be a number like 12.5"),
        ({"seconds": "1e308"}, "seconds must be a number like 12.5"),
    ],
)
def test_numbers_take_ascii_digits_only(app, ann_at_her_item, fields, message):
    ann, cid, item = ann_at_her_item
    assert_refused(app.state.engine, ann, cid, item, 400, message, **fields)


def test_refusals_quote_only_the_start_of_a_value(app, ann_at_her_item):
    ann, cid, item = ann_at_her_item
    huge = "x" * 100_000
    r = answer(ann, cid, item, skip_reason=huge)
    assert r.status_code == 400 and "unknown skip reason" in r.text
    assert "x" * 40 in r.text and "x" * 41 not in r.text


def test_unsigned_forms_are_still_bounded(app, ann_at_her_item):
    # A body too large is refused before the CSRF check could read the token from it.
    _, cid, item = ann_at_her_item
    stranger = TestClient(app, follow_redirects=False)
    r = stranger.post(f"/c/{cid}/i/{item}", data={"comment": "x" * (MAX_FORM_BYTES + 1)})
    assert r.status_code == 413
