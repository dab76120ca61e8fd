"""Login and logout.

The login form has no session yet, so its CSRF token is bound to a pre-session: a random cookie
set with the form, from which the token is derived with the app's secret (an HMAC). A token of
another pre-session, or a cookie and a field made up to match, is refused. Logout is an ordinary
CSRF-checked POST.

Failed logins are throttled per account name and per client address (429 with ``Retry-After``,
even for the right password) and lock an account after more (403 until an admin unlocks it); see
:class:`validation.auth.LoginPolicy`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..auth import (
    AccountLocked,
    LoginThrottled,
    end_session,
    login,
    new_presession,
    presession_token,
    presession_token_ok,
)
from ..deps import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    BoundedRoute,
    EngineDep,
    ReviewerForm,
    page,
    review_state,
)

__all__ = ["router"]

router = APIRouter(route_class=BoundedRoute)


def _safe_next(value: str) -> str:
    # Only same-site paths: never redirect to another host after login.
    return (
        value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"
    )


def _login_page(request: Request, next_path: str, *, status: int, error: str) -> Response:
    # A fresh pre-session per form; the hidden token is only valid with its cookie.
    state = review_state(request)
    presession = new_presession()
    response = page(
        request,
        "login.html",
        None,
        status=status,
        csrf=presession_token(state.secret, presession),
        next=_safe_next(next_path),
        error=error,
    )
    response.set_cookie(
        PRESESSION_COOKIE,
        presession,
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
        max_age=3600,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    """The login page."""
    return _login_page(request, next, status=200, error="")


@router.post("/login")
def login_submit(
    request: Request,
    engine: EngineDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the password and set the session cookie; back to the form if refused.

    401: wrong name or password; 429 with ``Retry-After``: too many recent failures for this name
    or from this address; 403: the account is locked.
    """
    state = review_state(request)
    if not presession_token_ok(state.secret, request.cookies.get(PRESESSION_COOKIE, ""), csrf):
        raise HTTPException(400, "The login form expired; reload the page.")
    address = request.client.host if request.client is not None else "unknown"
    try:
        token = login(
            engine,
            username,
            password,
            state.session_ttl,
            address=address,
            policy=state.login_policy,
        )
    except LoginThrottled as exc:
        response = _login_page(
            request,
            next,
            status=429,
            error=f"Too many failed logins; try again in {exc.retry_after} seconds.",
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except AccountLocked:
        return _login_page(
            request,
            next,
            status=403,
            error="This account is locked after too many failed logins; ask an admin to unlock it.",
        )
    if token is None:
        return _login_page(request, next, status=401, error="Wrong user name or password.")
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
        max_age=int(state.session_ttl.total_seconds()),
    )
    redirect.delete_cookie(PRESESSION_COOKIE)
    return redirect


@router.post("/logout")
def logout(request: Request, engine: EngineDep, _user: ReviewerForm) -> Response:
    """End the session."""
    end_session(engine, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
