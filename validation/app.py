"""The review web app (FastAPI, server-rendered pages, a little JavaScript for the keyboard).

Routes: ``/login``, ``/`` (campaigns and progress), ``/c/{campaign}/next``,
``/c/{campaign}/i/{item}`` (the review screen; POST submits),
``/c/{campaign}/i/{item}/chip/{true|false}.png``, and for admins ``/admin`` (accounts,
campaigns), ``/admin/c/{campaign}`` (dashboard),
``/admin/c/{campaign}/reviews``, ``/admin/c/{campaign}/export.parquet``, ``/admin/audit`` and
``/admin/logins`` (locked accounts, throttled names and addresses; unlock).

The routes live in :mod:`validation.routes` (``auth``, ``review``, ``admin``); what they share
(the state built here, the signed-in user, the CSRF check) in :mod:`validation.deps`.

Every POST carries the session's CSRF token; every change is written with an audit row in the
same transaction; a bad form is refused with 400 and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import LoginPolicy, app_secret, session_user
from .dataset import Dataset
from .db import connect
from .deps import HERE, SESSION_COOKIE, ReviewState, make_templates, page, review_state
from .routes import admin, auth, review

__all__ = ["create_app"]


def create_app(
    dataset_dir: Path,
    database_url: str,
    *,
    session_hours: float = 8.0,
    secure_cookies: bool = False,
    overture: Path | None = None,
    login_policy: LoginPolicy | None = None,
) -> FastAPI:
    """The review app for one dataset.

    Args:
        dataset_dir: The eocap output directory whose samples are reviewed.
        database_url: SQLAlchemy URL (see :func:`validation.db.database_url`).
        session_hours: Sessions expire this long after login.
        secure_cookies: Mark cookies ``Secure`` and send HSTS (set when served over HTTPS).
        overture: Overture tree for the map overlay of campaigns drawn in the app.
        login_policy: How failed logins are throttled and locked out (default:
            :class:`validation.auth.LoginPolicy`'s numbers).
    """
    app = FastAPI(title="eocap review", docs_url=None, redoc_url=None, openapi_url=None)
    engine = connect(database_url)
    state = ReviewState(
        engine=engine,
        dataset=Dataset(dataset_dir, overture),
        templates=make_templates(),
        session_ttl=timedelta(hours=session_hours),
        secure_cookies=secure_cookies,
        login_policy=login_policy or LoginPolicy(),
        secret=app_secret(engine),
    )
    app.state.review = state
    app.state.engine = state.engine
    app.state.dataset = state.dataset
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.middleware("http")(_security_headers)
    app.exception_handler(StarletteHTTPException)(_http_error)
    for module in (auth, review, admin):
        app.include_router(module.router)
    return app


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    if review_state(request).secure_cookies:
        # Served over HTTPS: browsers must not fall back to plain HTTP for a year.
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if request.url.path.startswith(("/c/", "/admin")):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    # 401 (no session) goes to the login page; any other error is a page that keeps the header.
    if exc.status_code == 401:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    user = session_user(review_state(request).engine, request.cookies.get(SESSION_COOKIE))
    return page(request, "error.html", user, status=exc.status_code, message=exc.detail)
