"""Login and logout.

The login form has no session yet, so its CSRF token is a double submit: a fresh random token in
a cookie and in the form's hidden field, which must match. Logout is an ordinary CSRF-checked POST.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..auth import end_session, login
from ..deps import LOGIN_CSRF_COOKIE, SESSION_COOKIE, EngineDep, ReviewerForm, page, review_state

__all__ = ["router"]

router = APIRouter()


def _safe_next(value: str) -> str:
    # Only same-site paths: never redirect to another host after login.
    return (
        value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"
    )


def _login_page(request: Request, next_path: str, *, status: int, error: str) -> Response:
    # A fresh double-submit token per form: the cookie and the hidden field must match.
    token = secrets.token_urlsafe(24)
    response = page(
        request,
        "login.html",
        None,
        status=status,
        csrf=token,
        next=_safe_next(next_path),
        error=error,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=review_state(request).secure_cookies,
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
    """Check the password and set the session cookie; back to the form (401) if refused."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf.encode()):
        raise HTTPException(400, "The login form expired; reload the page.")
    state = review_state(request)
    token = login(engine, username, password, state.session_ttl)
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
    redirect.delete_cookie(LOGIN_CSRF_COOKIE)
    return redirect


@router.post("/logout")
def logout(request: Request, engine: EngineDep, _user: ReviewerForm) -> Response:
    """End the session."""
    end_session(engine, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
