"""Attacks on the review app's answers from a real page: Debian's Chromium, driven by Playwright,
against the real server process (the setup of tests/validation/test_browser.py).

A reviewer's own, valid form pointed at another reviewer's item, and a script's POST to an item
not given to anyone, are refused with 403 and save nothing; the comment box holds at most the
server's limit, and a longer comment or a full-width digit forced into the form is refused with
400 and a message naming the field.
"""

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.validation.test_browser import log_in
from validation.campaigns import CampaignSettings, create_campaign
from validation.dataset import Dataset
from validation.db import campaigns, items, reviews, users
from validation.routes.review import MAX_COMMENT


@pytest.fixture
def solo(site):
    """(base URL, engine, campaign): a campaign beside the site's whose items need one answer."""
    base, engine, pilot = site
    with engine.connect() as con:
        root = con.execute(
            sa.select(campaigns.c.dataset).where(campaigns.c.id == pilot)
        ).scalar_one()
    settings = CampaignSettings(size=3, overlap_share=0.0, gold_share=0.0, seed=5)
    return base, engine, create_campaign(engine, Dataset(Path(root)), "solo", settings)


def saved(engine, campaign_id):
    """(reviewer, item) of every saved answer in the campaign."""
    with engine.connect() as con:
        return sorted(
            tuple(r)
            for r in con.execute(
                sa.select(users.c.username, reviews.c.item_id)
                .select_from(reviews.join(items).join(users))
                .where(items.c.campaign_id == campaign_id)
            )
        )


def open_given_item(page, base, campaign_id):
    page.goto(f"{base}/c/{campaign_id}/next")
    page.wait_for_selector("#sentences")
    return page.url


def submit_form(page):
    with page.expect_navigation() as nav:
        page.eval_on_selector("#review-form", "f => f.requestSubmit()")
    return nav.value


def test_forged_answers_to_items_not_given_are_refused(solo, browser):
    base, engine, cid = solo
    ann = log_in(browser, base, "ann")
    anns_item = open_given_item(ann, base, cid)
    ann.keyboard.press("2")
    with ann.expect_navigation():
        ann.keyboard.press("Enter")
    assert saved(engine, cid) == [("ann", int(anns_item.rsplit("/", 1)[1]))]

    bob = log_in(browser, base, "bob")
    bobs_item = open_given_item(bob, base, cid)
    assert bobs_item != anns_item
    # bob's own, valid form (his session's token, a rating) sent to ann's item, which has all
    # its answers: a vote he was not given.
    bob.keyboard.press("5")
    bob.eval_on_selector("#review-form", "(f, url) => { f.action = url; }", anns_item)
    response = submit_form(bob)
    assert response.status == 403
    assert "not yours to answer" in bob.inner_text("#error")
    # A script on the page POSTs to the last item, given to no one yet.
    with engine.connect() as con:
        last = con.execute(
            sa.select(sa.func.max(items.c.id)).where(items.c.campaign_id == cid)
        ).scalar_one()
    token = bob.input_value("header form input[name=csrf]")
    status = bob.evaluate(
        """async ([url, token]) => (await fetch(url, {
            method: "POST",
            body: new URLSearchParams({csrf: token, completeness: "2", hallucinations: "0"}),
        })).status""",
        [f"{base}/c/{cid}/i/{last}", token],
    )
    assert status == 403
    # Neither item opens for him.
    for url in (anns_item, f"{base}/c/{cid}/i/{last}"):
        assert bob.goto(url).status == 403
        assert "not given to you" in bob.inner_text("#error")
    assert [name for name, _ in saved(engine, cid)] == ["ann"]
    # Control: his own item, the same way, is saved.
    open_given_item(bob, base, cid)
    assert bob.url == bobs_item
    bob.keyboard.press("5")
    with bob.expect_navigation():
        bob.keyboard.press("Enter")
    assert [name for name, _ in saved(engine, cid)] == ["ann", "bob"]


def test_overlong_comment_and_foreign_digits_are_refused_with_a_message(solo, browser):
    base, engine, cid = solo
    ann = log_in(browser, base, "ann")
    item_url = open_given_item(ann, base, cid)
    # The box takes the server's limit and no more.
    assert ann.get_attribute("#comment", "maxlength") == str(MAX_COMMENT)
    ann.fill("#comment", "c" * (MAX_COMMENT + 500))
    assert len(ann.input_value("#comment")) == MAX_COMMENT
    # A page whose limit was taken off sends more: refused, not cut.
    ann.eval_on_selector(
        "#comment",
        "(el, n) => { el.removeAttribute('maxlength'); el.value = 'c'.repeat(n); }",
        MAX_COMMENT + 500,
    )
    ann.keyboard.press("Escape")
    ann.keyboard.press("2")
    response = submit_form(ann)
    assert response.status == 400
    assert f"the comment has {MAX_COMMENT + 500} characters; the limit is {MAX_COMMENT}" in (
        ann.inner_text("#error")
    )
    # A full-width 3 in the rating field.
    ann.goto(item_url)
    ann.wait_for_selector("#sentences")
    ann.keyboard.press("3")
    ann.eval_on_selector("#completeness", "el => { el.value = '\\uff13'; }")
    response = submit_form(ann)
    assert response.status == 400
    assert "completeness must be a whole number 1-6" in ann.inner_text("#error")
    assert saved(engine, cid) == []
