"""Login throttling and lockout in Debian's Chromium, against the real server process.

ann's password is guessed in the login form until the app throttles her account (429, the wait
on the page, even for her right password) and then locks it (the right password refused); an
admin finds her on the Logins page and unlocks her with its button; then she logs in.
"""

from tests.validation.conftest import PASSWORD
from tests.validation.test_browser import log_in
from tests.validation.test_security_auth import POLICY, audited, end_backoffs


def submit_login(page, base, name, password):
    """Fill the login form and press Enter; the response the page ends on."""
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    with page.expect_navigation() as navigation:
        page.keyboard.press("Enter")
    return navigation.value


def test_lockout_in_the_browser_and_an_admin_unlocks(site, browser):
    base, engine, _ = site
    ann = browser.new_context().new_page()
    for n in range(1, POLICY.lockout_after + 1):
        response = submit_login(ann, base, "ann", f"guess-{n}")
        assert response.status == 401, n
        assert "Wrong user name or password" in ann.inner_text("#login .error")
        if n == POLICY.account_throttle_after:
            response = submit_login(ann, base, "ann", PASSWORD)
            assert response.status == 429
            wait = int(response.headers["retry-after"])
            assert 0 < wait <= POLICY.first_delay_s
            assert f"try again in {wait} seconds" in ann.inner_text("#login .error")
        end_backoffs(engine)
    response = submit_login(ann, base, "ann", PASSWORD)
    assert response.status == 403
    assert "locked" in ann.inner_text("#login .error")
    assert ann.url.endswith("/login")

    admin = log_in(browser, base, "admin")
    admin.click("header a[href='/admin/logins']")
    assert "ann" in admin.inner_text("#locked")
    with admin.expect_navigation():
        admin.click("#locked button:has-text('Unlock')")
    assert "ann" not in admin.inner_text("#locked")
    (lifted,) = audited(engine, "login_unlocked")
    assert lifted.before["account"] == "ann"

    response = submit_login(ann, base, "ann", PASSWORD)
    assert response.status == 200 and ann.url == f"{base}/"
    assert "ann (reviewer)" in ann.inner_text("header")
    # Logins that succeeded: the admin's and ann's after the unlock, none while she was guessed at.
    assert len(audited(engine, "login")) == 2
