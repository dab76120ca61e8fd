"""What every route of the review app shares: its state, the signed-in user, the CSRF check.

:func:`validation.app.create_app` puts one :class:`ReviewState` on ``app.state.review``; routes
reach it, and the user, only through the FastAPI dependencies here:

- :data:`Reviewer` / :data:`Admin`: the session's user (401 -> the login page; 403 for a reviewer
  on an admin page).
- :data:`ReviewerForm` / :data:`AdminForm`: the same, for a POST, after the form's ``csrf`` field
  has been compared (constant time) with the session's token; a wrong or missing token is refused
  with 400 before the route's body runs. Every POST route but ``/login`` (whose token is bound
  to a pre-session cookie instead) takes one of them; ``tests/test_review_app.py`` checks that.
- :data:`EngineDep` / :data:`DatasetDep`: the database and the dataset.

:func:`get_campaign` and :func:`get_item` are the server-side checks of the ids in a URL: an item
is only ever found inside the campaign its URL names.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine, Row

from .auth import LoginPolicy, User, session_user
from .campaigns import COMPLETENESS, FLAG_TYPES, HALLUCINATIONS, SKIP_REASONS, STRATA
from .dataset import Dataset
from .db import campaigns, items

__all__ = [
    "CSRF_MESSAGE",
    "PRESESSION_COOKIE",
    "SESSION_COOKIE",
    "Admin",
    "AdminForm",
    "DatasetDep",
    "EngineDep",
    "ReviewState",
    "Reviewer",
    "ReviewerForm",
    "admin_form",
    "admin_user",
    "current_user",
    "get_campaign",
    "get_item",
    "make_templates",
    "page",
    "review_state",
    "reviewer_form",
]

HERE = Path(__file__).parent
SESSION_COOKIE = "eocap_session"
PRESESSION_COOKIE = "eocap_presession"
CSRF_MESSAGE = "The form's security token is wrong or missing; reload the page."


@dataclass(frozen=True)
class ReviewState:
    """The app's shared objects (``app.state.review``).

    Attributes:
        engine: The review database.
        dataset: The dataset whose samples are reviewed.
        templates: The Jinja2 pages.
        session_ttl: How long a session lives after login.
        secure_cookies: Whether cookies are marked ``Secure`` and HSTS is sent (behind HTTPS).
        login_policy: How failed logins are throttled and locked out.
        secret: The key login-form tokens are derived from (:func:`validation.auth.app_secret`).
    """

    engine: Engine
    dataset: Dataset
    templates: Jinja2Templates
    session_ttl: timedelta
    secure_cookies: bool
    login_policy: LoginPolicy
    secret: bytes


def make_templates() -> Jinja2Templates:
    """The app's templates, with the answer scales as globals."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        COMPLETENESS=COMPLETENESS,
        HALLUCINATIONS=HALLUCINATIONS,
        FLAG_TYPES=FLAG_TYPES,
        SKIP_REASONS=SKIP_REASONS,
        STRATA=STRATA,
    )
    return templates


def review_state(request: Request) -> ReviewState:
    """The :class:`ReviewState` of the app serving ``request``."""
    state = request.app.state.review
    if not isinstance(state, ReviewState):
        raise RuntimeError("app.state.review is not set: build the app with create_app")
    return state


def _engine(request: Request) -> Engine:
    return review_state(request).engine


def _dataset(request: Request) -> Dataset:
    return review_state(request).dataset


EngineDep = Annotated[Engine, Depends(_engine)]
DatasetDep = Annotated[Dataset, Depends(_dataset)]


def page(
    request: Request, name: str, user: User | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    """Render template ``name`` for ``user`` (None: signed out)."""
    return review_state(request).templates.TemplateResponse(
        request, name, {"user": user, **ctx}, status_code=status
    )


def current_user(request: Request, engine: EngineDep) -> User:
    """The session's user; 401 (answered with a redirect to the login page) without one."""
    user = session_user(engine, request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise HTTPException(401)
    return user


Reviewer = Annotated[User, Depends(current_user)]


def admin_user(user: Reviewer) -> User:
    """The session's user if an admin; 403 for a reviewer."""
    if not user.is_admin:
        raise HTTPException(403, "This page is for admins.")
    return user


Admin = Annotated[User, Depends(admin_user)]


def _check_csrf(user: User, token: str) -> User:
    if not hmac.compare_digest(user.csrf_token.encode(), token.encode()):
        raise HTTPException(400, CSRF_MESSAGE)
    return user


def reviewer_form(user: Reviewer, csrf: Annotated[str, Form()] = "") -> User:
    """The signed-in user of a POST whose ``csrf`` field is the session's token."""
    return _check_csrf(user, csrf)


def admin_form(user: Admin, csrf: Annotated[str, Form()] = "") -> User:
    """The signed-in admin of a POST whose ``csrf`` field is the session's token."""
    return _check_csrf(user, csrf)


ReviewerForm = Annotated[User, Depends(reviewer_form)]
AdminForm = Annotated[User, Depends(admin_form)]


def get_campaign(engine: Engine, campaign_id: int) -> Row[Any]:
    """The campaign row; 404 if there is none."""
    with engine.connect() as con:
        row = con.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise HTTPException(404, "No such campaign.")
    return row


def get_item(engine: Engine, campaign_id: int, item_id: int) -> Row[Any]:
    """The item row if it belongs to the campaign; 404 otherwise."""
    with engine.connect() as con:
        row = con.execute(
            sa.select(items).where(items.c.id == item_id, items.c.campaign_id == campaign_id)
        ).first()
    if row is None:
        raise HTTPException(404, "No such item in this campaign.")
    return row
