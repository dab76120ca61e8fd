"""Admin pages: accounts, campaigns, dashboards, reviews, export, audit trail, login lockouts.

Campaigns are drawn and grown here; the logins page lists locked accounts (with an unlock button)
and the names and addresses throttled now.

Every route takes :data:`validation.deps.Admin` (a reviewer gets 403) and every POST
:data:`validation.deps.AdminForm` (the session's CSRF token, checked before anything is read or
written).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from ..auth import AuthError, create_user, login_blocks, unlock
from ..campaigns import (
    COMPLETENESS,
    FLAG_TYPES,
    HALLUCINATIONS,
    CampaignSettings,
    create_campaign,
    grow_campaign,
)
from ..dataset import DatasetError
from ..db import audit, campaigns, users
from ..deps import Admin, AdminForm, BoundedRoute, DatasetDep, EngineDep, get_campaign, page
from ..plots import bar_chart, interval_chart
from ..results import campaign_results, export_reviews, review_records

__all__ = ["router"]

router = APIRouter(prefix="/admin", route_class=BoundedRoute)


@router.get("", response_class=HTMLResponse)
def admin_home(request: Request, user: Admin, engine: EngineDep, error: str = "") -> Response:
    """Campaigns and accounts, with the forms that add them."""
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


@router.post("/users")
def admin_add_user(
    user: AdminForm,
    engine: EngineDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "reviewer",
) -> Response:
    """Create an account."""
    try:
        create_user(engine, username, password, role, by=user.id)
    except AuthError as exc:
        raise HTTPException(400, f"Not saved: {exc}") from None
    return RedirectResponse("/admin", status_code=303)


@router.post("/campaigns")
def admin_add_campaign(
    user: AdminForm,
    engine: EngineDep,
    dataset: DatasetDep,
    name: Annotated[str, Form()] = "",
    size: Annotated[str, Form()] = "100",
    seed: Annotated[str, Form()] = "0",
    allocation: Annotated[str, Form()] = "equal",
    overlap_share: Annotated[str, Form()] = "0.2",
    overlap_reviewers: Annotated[str, Form()] = "2",
    gold_share: Annotated[str, Form()] = "0.05",
) -> Response:
    """Draw a new campaign from the dataset."""
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


@router.post("/c/{campaign_id}/grow")
def admin_grow(
    campaign_id: int,
    user: AdminForm,
    engine: EngineDep,
    dataset: DatasetDep,
    size: Annotated[str, Form()] = "",
) -> Response:
    """Grow a campaign to ``size`` drawn items (the next draws of its sequence)."""
    get_campaign(engine, campaign_id)
    try:
        grow_campaign(engine, dataset, campaign_id, int(size), by=user.id)
    except ValueError as exc:
        raise HTTPException(400, f"Not saved: {exc}") from None
    return RedirectResponse(f"/admin/c/{campaign_id}", status_code=303)


@router.get("/c/{campaign_id}", response_class=HTMLResponse)
def dashboard(request: Request, campaign_id: int, user: Admin, engine: EngineDep) -> Response:
    """A campaign's results: answer distributions, hallucination rates, agreement."""
    campaign = get_campaign(engine, campaign_id)
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


@router.get("/c/{campaign_id}/reviews", response_class=HTMLResponse)
def all_reviews(request: Request, campaign_id: int, user: Admin, engine: EngineDep) -> Response:
    """Every review of a campaign, with reviewer names."""
    campaign = get_campaign(engine, campaign_id)
    return page(
        request,
        "reviews.html",
        user,
        campaign=campaign,
        records=review_records(engine, campaign_id),
    )


@router.get("/c/{campaign_id}/export.parquet")
def export(campaign_id: int, _user: Admin, engine: EngineDep) -> Response:
    """A campaign's reviews as a Parquet download."""
    campaign = get_campaign(engine, campaign_id)
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


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, user: Admin, engine: EngineDep, limit: int = 200) -> Response:
    """The latest ``limit`` rows of the audit trail."""
    with engine.connect() as con:
        rows = con.execute(
            sa.select(audit, users.c.username)
            .join(users, users.c.id == audit.c.user_id, isouter=True)
            .order_by(audit.c.id.desc())
            .limit(min(max(limit, 1), 5000))
        ).fetchall()
    return page(request, "audit.html", user, rows=rows)


@router.get("/logins", response_class=HTMLResponse)
def logins_page(request: Request, user: Admin, engine: EngineDep) -> Response:
    """Locked accounts (with an unlock button) and the names and addresses throttled now."""
    blocks = login_blocks(engine)
    return page(
        request,
        "logins.html",
        user,
        locked=[b for b in blocks if b.locked_at is not None],
        throttled=[b for b in blocks if b.locked_at is None],
    )


@router.post("/logins/unlock")
def admin_unlock(
    user: AdminForm, engine: EngineDep, username: Annotated[str, Form()] = ""
) -> Response:
    """Lift an account's lockout."""
    if not unlock(engine, username, by=user.id):
        raise HTTPException(400, f"Not saved: {username!r} is not locked.")
    return RedirectResponse("/admin/logins", status_code=303)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:64] or "campaign"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
