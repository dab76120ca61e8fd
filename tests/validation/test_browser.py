"""The review app in Debian's Chromium, driven by Playwright, against the real server process.

Two reviewers review the same items from the keyboard (one flags a claim and edits a caption),
the admin sees agreement computed from those answers, and a reviewer can neither read another's
answers nor open an admin page. Screenshots go to EOCAP_SCREENSHOTS (docs/img) when set.
"""

import os
from pathlib import Path

import sqlalchemy as sa

from tests.validation.conftest import PASSWORD
from validation.db import items, reviews, users
from validation.results import campaign_results


def shoot(page, name):
    folder = os.environ.get("EOCAP_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def log_in(browser, base, name):
    page = browser.new_context(viewport={"width": 1300, "height": 950}).new_page()
    page.goto(f"{base}/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page


def review_all(page, base, cid, ratings, *, flag_and_edit=False):
    page.goto(f"{base}/c/{cid}/next")
    for n, rating in enumerate(ratings):
        page.wait_for_selector("#sentences")
        page.keyboard.press(str(rating))
        if flag_and_edit and n == 0:
            page.keyboard.press("ArrowDown")
            page.keyboard.press("ArrowUp")
            page.keyboard.press("c")  # flag the first sentence: wrong count
            assert "count" in page.inner_text("#sentences li:nth-child(1) .flag-label")
            assert page.get_attribute("#hallucination-scale button.chosen", "data-value") == "1"
            page.keyboard.press("n")  # false colour
            assert page.get_attribute("#chip", "src").endswith("false.png")
            page.keyboard.press("+")
            page.keyboard.press("]")
            page.keyboard.press("e")
            page.fill("#edited", "A corrected caption from ann.")
            page.keyboard.press("Escape")
            shoot(page, "review-screen.png")
        with page.expect_navigation():
            page.keyboard.press("Enter")
    page.wait_for_selector("#done")


def test_two_reviewers_and_admin(site, browser):
    base, engine, cid = site
    ann = log_in(browser, base, "ann")
    review_all(ann, base, cid, [2, 3, 1], flag_and_edit=True)
    # Arrow keys move through her own answers; the saved answer is shown.
    with engine.connect() as con:
        ids = [
            r.id
            for r in con.execute(
                sa.select(items.c.id).where(items.c.campaign_id == cid).order_by(items.c.position)
            )
        ]
    ann.goto(f"{base}/c/{cid}/i/{ids[1]}")
    with ann.expect_navigation():
        ann.keyboard.press("ArrowLeft")
    assert ann.url.endswith(f"/i/{ids[0]}")
    assert "your answer is saved" in ann.inner_text("#progress")
    assert ann.input_value("#edited") == "A corrected caption from ann."

    bob = log_in(browser, base, "bob")
    review_all(bob, base, cid, [2, 3, 2])
    # bob cannot read ann's answers or any admin page.
    bob.goto(f"{base}/c/{cid}/i/{ids[0]}")
    assert "corrected caption from ann" not in bob.content()
    for path in ("/admin", f"/admin/c/{cid}", f"/admin/c/{cid}/reviews", "/admin/audit"):
        response = bob.goto(f"{base}{path}")
        assert response.status == 403, path
        assert "for admins" in bob.inner_text("#error")

    with engine.connect() as con:
        saved = con.execute(
            sa.select(reviews.c.flags, reviews.c.edited_caption).where(
                reviews.c.edited_caption.is_not(None)
            )
        ).fetchall()
    assert saved == [([{"sentence": 0, "type": "count"}], "A corrected caption from ann.")]

    admin = log_in(browser, base, "admin")
    admin.goto(f"{base}/admin/c/{cid}")
    expected = campaign_results(engine, cid)
    kappa = expected.kappa[0][2]
    table = admin.inner_text("#agreement")
    assert "ann / bob" in table and f"{kappa.value:.3f}" in table
    alpha = expected.agreement["completeness (ordinal alpha)"]
    assert f"{alpha.value:.3f}" in table
    shoot(admin, "dashboard.png")
    admin.goto(f"{base}/admin/c/{cid}/reviews")
    assert "A corrected caption from ann." in admin.inner_text("#all-reviews")


def submit_with_token(page, form, token):
    """Overwrite a real form's hidden CSRF field in the page, submit it, return the response."""
    page.eval_on_selector(f"{form} input[name=csrf]", "(el, t) => { el.value = t; }", token)
    assert page.input_value(f"{form} input[name=csrf]") == token
    with page.expect_navigation() as nav:
        page.eval_on_selector(form, "f => f.requestSubmit()")
    return nav.value


def test_forged_csrf_token_in_a_real_form_is_refused(site, browser):
    base, engine, cid = site
    bob = log_in(browser, base, "bob")
    bobs_token = bob.input_value("header form input[name=csrf]")  # a token an attacker knows
    ann = log_in(browser, base, "ann")
    ann.goto(f"{base}/c/{cid}/next")
    item_url = ann.url
    for token in ("forged-token", bobs_token, ""):
        ann.goto(item_url)
        ann.wait_for_selector("#sentences")
        ann.keyboard.press("2")  # a complete, valid answer: only the token is wrong
        response = submit_with_token(ann, "#review-form", token)
        assert response.status == 400, token
        assert "security token is wrong or missing" in ann.inner_text("#error")
    with engine.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(reviews)).scalar_one() == 0
    # Control: the same form with the page's own token is saved.
    ann.goto(item_url)
    ann.wait_for_selector("#sentences")
    ann.keyboard.press("2")
    with ann.expect_navigation():
        ann.keyboard.press("Enter")
    with engine.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(reviews)).scalar_one() == 1

    # An admin form: a new admin account posted with a reviewer's token is not created.
    admin = log_in(browser, base, "admin")
    admin.goto(f"{base}/admin")
    admin.fill("#new-user input[name=username]", "mallory")
    admin.fill("#new-user input[name=password]", "mallory-password")
    admin.select_option("#new-user select[name=role]", "admin")
    response = submit_with_token(admin, "#new-user", bobs_token)
    assert response.status == 400
    assert "security token is wrong or missing" in admin.inner_text("#error")
    with engine.connect() as con:
        names = con.execute(sa.select(users.c.username)).scalars().all()
    assert "mallory" not in names
