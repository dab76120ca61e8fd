"""The reviewer's pages: campaigns, the next item, the review screen and its answer, chip images.

Every item is looked up inside the campaign its URL names (:func:`validation.deps.get_item`), and
a reviewer only ever reads their own answers. A submitted answer is checked against the item as a
whole (:func:`parse_review`); a bad one is refused with 400 and changes nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

from ..auth import User
from ..campaigns import (
    COMPLETENESS,
    FLAG_TYPES,
    HALLUCINATIONS,
    SKIP_REASONS,
    next_item,
    user_progress,
)
from ..dataset import DatasetError
from ..db import audit_log, campaigns, items, now, reviews
from ..deps import DatasetDep, EngineDep, Reviewer, ReviewerForm, get_campaign, get_item, page

__all__ = ["MAX_CAPTION", "BadForm", "parse_review", "router", "save_review"]

MAX_CAPTION = 4000

router = APIRouter()


class BadForm(ValueError):
    """A submitted form that is refused as a whole."""


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: Reviewer, engine: EngineDep) -> Response:
    """The campaigns, with the user's answers in each."""
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


@router.get("/c/{campaign_id}/next")
def next_for_user(
    request: Request, campaign_id: int, user: Reviewer, engine: EngineDep
) -> Response:
    """Redirect to the user's next item, or the campaign's done page."""
    campaign = get_campaign(engine, campaign_id)
    item_id = next_item(engine, campaign_id, user.id)
    if item_id is None:
        return page(request, "done.html", user, campaign=campaign)
    return RedirectResponse(f"/c/{campaign_id}/i/{item_id}", status_code=303)


def _neighbours(
    engine: Engine, campaign_id: int, user_id: int, position: int
) -> tuple[int | None, int | None]:
    # The user's answered items just before and after this one, in campaign order.
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


@router.get("/c/{campaign_id}/i/{item_id}", response_class=HTMLResponse)
def review_screen(
    request: Request, campaign_id: int, item_id: int, user: Reviewer, engine: EngineDep
) -> Response:
    """The review screen of one item, with the user's own saved answer."""
    campaign = get_campaign(engine, campaign_id)
    item = get_item(engine, campaign_id, item_id)
    with engine.connect() as con:
        # Only the user's own answer: reviewers never see each other's.
        mine = con.execute(
            sa.select(reviews).where(reviews.c.item_id == item_id, reviews.c.user_id == user.id)
        ).first()
    prev_id, next_id = _neighbours(engine, campaign_id, user.id, item.position)
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


@router.post("/c/{campaign_id}/i/{item_id}")
def review_submit(
    campaign_id: int,
    item_id: int,
    user: ReviewerForm,
    engine: EngineDep,
    completeness: Annotated[str, Form()] = "",
    hallucinations: Annotated[str, Form()] = "",
    flags: Annotated[str, Form()] = "[]",
    edited_caption: Annotated[str, Form()] = "",
    skip_reason: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    seconds: Annotated[str, Form()] = "",
) -> Response:
    """Save the user's answer (new or changed) and go to their next item."""
    get_campaign(engine, campaign_id)
    item = get_item(engine, campaign_id, item_id)
    try:
        values = parse_review(
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
    save_review(engine, user, item_id, values)
    return RedirectResponse(f"/c/{campaign_id}/next", status_code=303)


@router.get("/c/{campaign_id}/i/{item_id}/chip/{kind}.png")
def chip(
    campaign_id: int,
    item_id: int,
    kind: str,
    _user: Reviewer,
    engine: EngineDep,
    dataset: DatasetDep,
) -> Response:
    """The item's cached true- or false-colour chip."""
    item = get_item(engine, campaign_id, item_id)
    try:
        path = dataset.chip_path(item.sample_id, kind)
    except DatasetError:
        raise HTTPException(404, "No such image.") from None
    if not path.exists():
        raise HTTPException(404, "The chip image was not cached for this item.")
    return FileResponse(path, media_type="image/png")


def parse_review(
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


def save_review(engine: Engine, user: User, item_id: int, values: dict[str, Any]) -> None:
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
