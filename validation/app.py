"""The review web app (FastAPI, server-rendered pages, a little JavaScript for the keyboard).

Routes: ``/login``, ``/`` (campaigns and progress), ``/c/{campaign}/next``,
``/c/{campaign}/i/{item}`` (the review screen; POST submits),
``/c/{campaign}/i/{item}/chip/{true|false}.png``, and for admins ``/admin`` (accounts,
campaigns), ``/admin/c/{campaign}`` (dashboard),
``/admin/c/{campaign}/reviews``, ``/admin/c/{campaign}/export.parquet`` and ``/admin/audit``.

Every POST carries the session's CSRF token; every change is written with an audit row in the
same transaction; a bad form is refused with 400 and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import AuthError, User, create_user, end_session, login, session_user
from .campaigns import (
    COMPLETENESS,
    FLAG_TYPES,
    HALLUCINATIONS,
    SKIP_REASONS,
    STRATA,
    CampaignSettings,
    create_campaign,
    grow_campaign,
    next_item,
    user_progress,
)
from .dataset import Dataset, DatasetError
from .db import audit, audit_log, campaigns, connect, items, now, reviews, users
from .plots import bar_chart, interval_chart
from .results import campaign_results, export_reviews, review_records

__all__ = ["create_app"]

HERE = Path(__file__).parent
SESSION_COOKIE = "eocap_session"
LOGIN_CSRF_COOKIE = "eocap_login_csrf"
MAX_CAPTION = 4000


class BadForm(ValueError):
    """A submitted form that is refused as a whole."""


def create_app(
    dataset_dir: Path,
    database_url: str,
    *,
    session_hours: float = 8.0,
    secure_cookies: bool = False,
    overture: Path | None = None,
) -> FastAPI:
    """The review app for one dataset.

    Args:
        dataset_dir: The eocap output directory whose samples are reviewed.
        database_url: SQLAlchemy URL (see :func:`validation.db.database_url`).
        session_hours: Sessions expire this long after login.
        secure_cookies: Mark cookies ``Secure`` (set when served over HTTPS).
        overture: Overture tree for the map overlay of campaigns drawn in the app.
    """
    app = FastAPI(title="eocap review", docs_url=None, redoc_url=None, openapi_url=None)
    engine: Engine = connect(database_url)
    dataset = Dataset(dataset_dir, overture)
    ttl = timedelta(hours=session_hours)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        COMPLETENESS=COMPLETENESS,
        HALLUCINATIONS=HALLUCINATIONS,
        FLAG_TYPES=FLAG_TYPES,
        SKIP_REASONS=SKIP_REASONS,
        STRATA=STRATA,
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.engine = engine
    app.state.dataset = dataset

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        if request.url.path.startswith(("/c/", "/admin")):
            response.headers["Cache-Control"] = "no-store"
        return response

    def page(
        request: Request, name: str, user: User | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"user": user, **ctx}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        user = session_user(engine, request.cookies.get(SESSION_COOKIE))
        return page(request, "error.html", user, status=exc.status_code, message=exc.detail)

    def require_user(request: Request) -> User:
        user = session_user(engine, request.cookies.get(SESSION_COOKIE))
        if user is None:
            raise HTTPException(401)
        return user

    def require_admin(request: Request) -> User:
        user = require_user(request)
        if not user.is_admin:
            raise HTTPException(403, "This page is for admins.")
        return user

    def check_csrf(user: User, token: str) -> None:
        if not hmac.compare_digest(user.csrf_token.encode(), token.encode()):
            raise HTTPException(
                400, "The form's security token is wrong or missing; reload the page."
            )

    def get_campaign(campaign_id: int) -> Any:
        with engine.connect() as con:
            row = con.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
        if row is None:
            raise HTTPException(404, "No such campaign.")
        return row

    def get_item(campaign_id: int, item_id: int) -> Any:
        with engine.connect() as con:
            row = con.execute(
                sa.select(items).where(items.c.id == item_id, items.c.campaign_id == campaign_id)
            ).first()
        if row is None:
            raise HTTPException(404, "No such item in this campaign.")
        return row

    # -- login -----------------------------------------------------------------------------

    def login_page(request: Request, next_path: str, *, status: int, error: str) -> Response:
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
            secure=secure_cookies,
            max_age=3600,
        )
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return login_page(request, next, status=200, error="")

    @app.post("/login")
    def login_submit(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        csrf: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), csrf.encode()):
            raise HTTPException(400, "The login form expired; reload the page.")
        token = login(engine, username, password, ttl)
        if token is None:
            return login_page(request, next, status=401, error="Wrong user name or password.")
        redirect = RedirectResponse(_safe_next(next), status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            max_age=int(ttl.total_seconds()),
        )
        redirect.delete_cookie(LOGIN_CSRF_COOKIE)
        return redirect

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        user = require_user(request)
        check_csrf(user, csrf)
        end_session(engine, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- reviewer pages --------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        user = require_user(request)
        with engine.connect() as con:
            rows = con.execute(sa.select(campaigns).order_by(campaigns.c.id)).fetchall()
            mine: dict[int, int] = dict(
                con.execute(
                    sa.select(items.c.campaign_id, sa.func.count())
                    .join(reviews, reviews.c.item_id == items.c.id)
                    .where(reviews.c.user_id == user.id)
                    .group_by(items.c.campaign_id)
                ).fetchall()
            )
        listing = []
        for c in rows:
            nxt = next_item(engine, c.id, user.id)
            listing.append(
                {"id": c.id, "name": c.name, "done": mine.get(c.id, 0), "open": nxt is not None}
            )
        return page(request, "home.html", user, campaigns=listing)

    @app.get("/c/{campaign_id}/next")
    def next_for_user(request: Request, campaign_id: int) -> Response:
        user = require_user(request)
        campaign = get_campaign(campaign_id)
        item_id = next_item(engine, campaign_id, user.id)
        if item_id is None:
            return page(request, "done.html", user, campaign=campaign)
        return RedirectResponse(f"/c/{campaign_id}/i/{item_id}", status_code=303)

    def neighbours(campaign_id: int, user_id: int, position: int) -> tuple[int | None, int | None]:
        mine = (
            sa.select(items.c.id, items.c.position)
            .join(reviews, reviews.c.item_id == items.c.id)
            .where(items.c.campaign_id == campaign_id, reviews.c.user_id == user_id)
        )
        with engine.connect() as con:
            prev = con.execute(
                mine.where(items.c.position < position).order_by(items.c.position.desc()).limit(1)
            ).first()
            nxt = con.execute(
                mine.where(items.c.position > position).order_by(items.c.position).limit(1)
            ).first()
        return (prev.id if prev else None, nxt.id if nxt else None)

    @app.get("/c/{campaign_id}/i/{item_id}", response_class=HTMLResponse)
    def review_screen(request: Request, campaign_id: int, item_id: int) -> Response:
        user = require_user(request)
        campaign = get_campaign(campaign_id)
        item = get_item(campaign_id, item_id)
        with engine.connect() as con:
            # Only the user's own answer: reviewers never see each other's.
            mine = con.execute(
                sa.select(reviews).where(reviews.c.item_id == item_id, reviews.c.user_id == user.id)
            ).first()
        prev_id, next_id = neighbours(campaign_id, user.id, item.position)
        data = {
            "sentences": item.sentences,
            "features": item.features,
            "flagTypes": list(FLAG_TYPES),
            "review": None
            if mine is None
            else {
                "completeness": mine.completeness,
                "hallucinations": mine.hallucinations,
                "flags": mine.flags,
                "edited": mine.edited_caption,
                "skipped": mine.skipped,
            },
            "prev": f"/c/{campaign_id}/i/{prev_id}" if prev_id else None,
            "next": f"/c/{campaign_id}/i/{next_id}" if next_id else f"/c/{campaign_id}/next",
        }
        done, total = user_progress(engine, campaign_id, user.id)
        return page(
            request,
            "review.html",
            user,
            campaign=campaign,
            item=item,
            mine=mine,
            data_json=json.dumps(data).replace("<", "\\u003c"),
            progress={"done": done, "total": total},
        )

    @app.post("/c/{campaign_id}/i/{item_id}")
    def review_submit(
        request: Request,
        campaign_id: int,
        item_id: int,
        csrf: str = Form(""),
        completeness: str = Form(""),
        hallucinations: str = Form(""),
        flags: str = Form("[]"),
        edited_caption: str = Form(""),
        skip_reason: str = Form(""),
        comment: str = Form(""),
        seconds: str = Form(""),
    ) -> Response:
        user = require_user(request)
        check_csrf(user, csrf)
        get_campaign(campaign_id)
        item = get_item(campaign_id, item_id)
        try:
            values = _parse_review(
                item,
                completeness,
                hallucinations,
                flags,
                edited_caption,
                skip_reason,
                comment,
                seconds,
            )
        except BadForm as exc:
            raise HTTPException(400, f"Not saved: {exc}") from None
        _save_review(engine, user, item_id, values)
        return RedirectResponse(f"/c/{campaign_id}/next", status_code=303)

    @app.get("/c/{campaign_id}/i/{item_id}/chip/{kind}.png")
    def chip(request: Request, campaign_id: int, item_id: int, kind: str) -> Response:
        require_user(request)
        item = get_item(campaign_id, item_id)
        try:
            path = dataset.chip_path(item.sample_id, kind)
        except DatasetError:
            raise HTTPException(404, "No such image.") from None
        if not path.exists():
            raise HTTPException(404, "The chip image was not cached for this item.")
        return FileResponse(path, media_type="image/png")

    # -- admin -----------------------------------------------------------------------------

    @app.get("/admin", response_class=HTMLResponse)
    def admin_home(request: Request, error: str = "") -> Response:
        user = require_admin(request)
        with engine.connect() as con:
            clist = con.execute(sa.select(campaigns).order_by(campaigns.c.id)).fetchall()
            ulist = con.execute(sa.select(users).order_by(users.c.username)).fetchall()
        return page(
            request,
            "admin.html",
            user,
            campaigns=clist,
            users=ulist,
            error=error,
            defaults=CampaignSettings.model_validate({}),
        )

    @app.post("/admin/users")
    def admin_add_user(
        request: Request,
        csrf: str = Form(""),
        username: str = Form(""),
        password: str = Form(""),
        role: str = Form("reviewer"),
    ) -> Response:
        user = require_admin(request)
        check_csrf(user, csrf)
        try:
            create_user(engine, username, password, role, by=user.id)
        except AuthError as exc:
            raise HTTPException(400, f"Not saved: {exc}") from None
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/campaigns")
    def admin_add_campaign(
        request: Request,
        csrf: str = Form(""),
        name: str = Form(""),
        size: str = Form("100"),
        seed: str = Form("0"),
        allocation: str = Form("equal"),
        overlap_share: str = Form("0.2"),
        overlap_reviewers: str = Form("2"),
        gold_share: str = Form("0.05"),
    ) -> Response:
        user = require_admin(request)
        check_csrf(user, csrf)
        if not name.strip() or len(name) > 128:
            raise HTTPException(400, "Not saved: a campaign needs a name (up to 128 characters).")
        try:
            settings = CampaignSettings.model_validate(
                {
                    "size": size,
                    "seed": seed,
                    "allocation": allocation,
                    "overlap_share": overlap_share,
                    "overlap_reviewers": overlap_reviewers,
                    "gold_share": gold_share,
                }
            )
            cid = create_campaign(engine, dataset, name.strip(), settings, by=user.id)
        except ValidationError as exc:
            raise HTTPException(400, f"Not saved: {_first_error(exc)}") from None
        except (ValueError, DatasetError) as exc:
            raise HTTPException(400, f"Not saved: {exc}") from None
        return RedirectResponse(f"/admin/c/{cid}", status_code=303)

    @app.post("/admin/c/{campaign_id}/grow")
    def admin_grow(
        request: Request, campaign_id: int, csrf: str = Form(""), size: str = Form("")
    ) -> Response:
        user = require_admin(request)
        check_csrf(user, csrf)
        get_campaign(campaign_id)
        try:
            grow_campaign(engine, dataset, campaign_id, int(size), by=user.id)
        except ValueError as exc:
            raise HTTPException(400, f"Not saved: {exc}") from None
        return RedirectResponse(f"/admin/c/{campaign_id}", status_code=303)

    @app.get("/admin/c/{campaign_id}", response_class=HTMLResponse)
    def dashboard(request: Request, campaign_id: int) -> Response:
        user = require_admin(request)
        campaign = get_campaign(campaign_id)
        res = campaign_results(engine, campaign_id)
        charts = [
            bar_chart("Completeness", list(COMPLETENESS), list(map(float, res.completeness))),
            bar_chart(
                "Hallucinations per caption",
                list(HALLUCINATIONS),
                list(map(float, res.hallucinations)),
            ),
            bar_chart(
                "Flagged claims by type",
                [FLAG_TYPES[k] for k in res.flag_types],
                [float(v) for v in res.flag_types.values()],
            ),
        ]
        rate_charts = [
            bar_chart(
                f"Hallucination rate by {key.replace('_', ' ')}",
                [f"{v} (n={n})" for v, _, n in rows],
                [r for _, r, _ in rows],
                percent=True,
            )
            for key, rows in res.rate_by.items()
        ]
        agreement_chart = interval_chart(
            "Agreement (95% CI)",
            [(k, e.value, e.low, e.high) for k, e in res.agreement.items()]
            + [(f"kappa {a} / {b}", e.value, e.low, e.high) for a, b, e in res.kappa],
        )
        return page(
            request,
            "dashboard.html",
            user,
            campaign=campaign,
            res=res,
            charts=charts,
            rate_charts=rate_charts,
            agreement_chart=agreement_chart,
        )

    @app.get("/admin/c/{campaign_id}/reviews", response_class=HTMLResponse)
    def all_reviews(request: Request, campaign_id: int) -> Response:
        user = require_admin(request)
        campaign = get_campaign(campaign_id)
        return page(
            request,
            "reviews.html",
            user,
            campaign=campaign,
            records=review_records(engine, campaign_id),
        )

    @app.get("/admin/c/{campaign_id}/export.parquet")
    def export(request: Request, campaign_id: int) -> Response:
        require_admin(request)
        campaign = get_campaign(campaign_id)
        filename = f"{_slug(campaign.name)}-reviews.parquet"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "reviews.parquet"
            export_reviews(engine, path, campaign_id)
            body = path.read_bytes()
        return Response(
            body,
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.get("/admin/audit", response_class=HTMLResponse)
    def audit_page(request: Request, limit: int = 200) -> Response:
        user = require_admin(request)
        with engine.connect() as con:
            rows = con.execute(
                sa.select(audit, users.c.username)
                .join(users, users.c.id == audit.c.user_id, isouter=True)
                .order_by(audit.c.id.desc())
                .limit(min(max(limit, 1), 5000))
            ).fetchall()
        return page(request, "audit.html", user, rows=rows)

    return app


def _safe_next(value: str) -> str:
    # Only same-site paths: never redirect to another host after login.
    return (
        value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:64] or "campaign"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"


def _parse_review(
    item: Any,
    completeness: str,
    hallucinations: str,
    flags: str,
    edited_caption: str,
    skip_reason: str,
    comment: str,
    seconds: str,
) -> dict[str, Any]:
    """Check a submitted review against the item; raises BadForm naming the first problem."""
    out: dict[str, Any] = {"comment": comment.strip()[:2000] or None}
    try:
        out["seconds"] = min(max(float(seconds), 0.0), 86400.0) if seconds else None
    except ValueError:
        raise BadForm("seconds must be a number") from None
    if skip_reason:
        if skip_reason not in SKIP_REASONS:
            raise BadForm(f"unknown skip reason {skip_reason!r}")
        return {
            **out,
            "skipped": True,
            "skip_reason": skip_reason,
            "completeness": None,
            "hallucinations": None,
            "flags": [],
            "edited_caption": None,
        }
    try:
        rating = int(completeness)
        count = int(hallucinations)
    except ValueError:
        raise BadForm("rate completeness (1-6) and the number of hallucinations (0-3)") from None
    if not 1 <= rating <= len(COMPLETENESS):
        raise BadForm(f"completeness must be 1-{len(COMPLETENESS)}, got {rating}")
    if not 0 <= count <= len(HALLUCINATIONS) - 1:
        raise BadForm(f"hallucinations must be 0-{len(HALLUCINATIONS) - 1}, got {count}")
    try:
        parsed = json.loads(flags or "[]")
    except json.JSONDecodeError:
        raise BadForm("flags are not valid JSON") from None
    if not isinstance(parsed, list) or len(parsed) > len(item.sentences):
        raise BadForm("flags must be a list, at most one per sentence")
    clean, seen = [], set()
    for f in parsed:
        if not isinstance(f, dict) or set(f) != {"sentence", "type"}:
            raise BadForm("each flag is {sentence, type}")
        s, t = f["sentence"], f["type"]
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < len(item.sentences):
            raise BadForm(
                f"flag on sentence {s!r}: the caption has {len(item.sentences)} sentences"
            )
        if t not in FLAG_TYPES:
            raise BadForm(f"unknown hallucination type {t!r}")
        if s in seen:
            raise BadForm(f"sentence {s} flagged twice")
        seen.add(s)
        clean.append({"sentence": s, "type": t})
    if count < min(len(clean), len(HALLUCINATIONS) - 1):
        raise BadForm(f"{len(clean)} flagged claims but {count} hallucinations")
    edited = edited_caption.strip()
    if len(edited) > MAX_CAPTION:
        raise BadForm(f"edited caption longer than {MAX_CAPTION} characters")
    return {
        **out,
        "skipped": False,
        "skip_reason": None,
        "completeness": rating,
        "hallucinations": count,
        "flags": sorted(clean, key=lambda f: f["sentence"]),
        "edited_caption": edited if edited and edited != item.caption.strip() else None,
    }


_REVIEW_FIELDS = (
    "completeness",
    "hallucinations",
    "flags",
    "edited_caption",
    "skipped",
    "skip_reason",
    "comment",
)


def _save_review(engine: Engine, user: User, item_id: int, values: dict[str, Any]) -> None:
    """Insert or update the user's review of an item, with the audit row, in one transaction."""
    t = now()
    with engine.begin() as con:
        old = con.execute(
            sa.select(reviews).where(reviews.c.item_id == item_id, reviews.c.user_id == user.id)
        ).first()
        if old is None:
            rid = con.execute(  # type: ignore[index]
                reviews.insert().values(
                    item_id=item_id, user_id=user.id, submitted_at=t, updated_at=t, **values
                )
            ).inserted_primary_key[0]
            audit_log(
                con,
                user_id=user.id,
                action="submit_review",
                entity="review",
                entity_id=rid,
                after={"item_id": item_id, **{k: values[k] for k in _REVIEW_FIELDS}},
            )
        else:
            con.execute(
                reviews.update().where(reviews.c.id == old.id).values(updated_at=t, **values)
            )
            audit_log(
                con,
                user_id=user.id,
                action="update_review",
                entity="review",
                entity_id=old.id,
                before={k: getattr(old, k) for k in _REVIEW_FIELDS},
                after={k: values[k] for k in _REVIEW_FIELDS},
            )
