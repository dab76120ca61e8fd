"""The reviewer's pages: campaigns, the next item, the review screen and its answer, chip images.

Every item is looked up inside the campaign its URL names (:func:`validation.deps.get_item`), and
a reviewer only ever reads their own answers. A reviewer sees, and answers, only the items given
to them (:func:`validation.campaigns.item_given`: the item :func:`~validation.campaigns.next_item`
gives them now, or one they answered); another item's page or chip is 403, and an answer to
anything else (another reviewer's item, one with all its planned answers, an unknown item) is
403 and changes nothing. The check and the write are one transaction, with the item's row locked
(PostgreSQL), so two reviewers answering the last open place of an item are served in turn.

A submitted answer is checked against the item as a whole (:func:`parse_review`), every field
bounded (:data:`MAX_COMMENT`, :data:`MAX_CAPTION`, :data:`MAX_FLAGS_CHARS`, ASCII digits, the
body at most :data:`validation.deps.MAX_FORM_BYTES`); a bad one is refused with 400 (413 for the
body) and changes nothing.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection, Engine, Row

from ..auth import User
from ..campaigns import (
    COMPLETENESS,
    FLAG_TYPES,
    HALLUCINATIONS,
    SKIP_REASONS,
    item_given,
    needs_answers,
    next_item,
    user_progress,
)
from ..dataset import DatasetError
from ..db import audit_log, campaigns, items, now, reviews
from ..deps import (
    BadForm,
    BoundedRoute,
    DatasetDep,
    EngineDep,
    Reviewer,
    ReviewerForm,
    ascii_int,
    bounded_json,
    get_campaign,
    get_item,
    page,
    shown,
)

__all__ = [
    "MAX_CAPTION",
    "MAX_COMMENT",
    "MAX_FLAGS_CHARS",
    "parse_review",
    "router",
    "save_review",
]

MAX_CAPTION = 4000
"""Characters of an edited caption (the review page's ``maxlength`` too)."""
MAX_COMMENT = 2000
"""Characters of a comment (the review page's ``maxlength`` too)."""
MAX_FLAGS_CHARS = 16_384
"""Characters of the flags field (JSON; the page writes about 40 per flagged sentence)."""
_FLAGS_DEPTH = 2  # a list of objects of scalars (hashable: a list as a type cannot get in)
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")

NOT_GIVEN = (
    "Not saved: this item is not yours to answer now (it was not given to you, or it has all its "
    "answers); go on with your next item."
)

router = APIRouter(route_class=BoundedRoute)


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
    engine: Engine, campaign_id: int, user_id: int, answer_id: int | None
) -> tuple[int | None, int | None]:
    # The items of the user's answers just before and after this one, in the order the user gave
    # them (their own order, in which a gold item is never near its source). An item not yet
    # answered comes after all of them.
    mine = (
        sa.select(items.c.id)
        .join(reviews, reviews.c.item_id == items.c.id)
        .where(items.c.campaign_id == campaign_id, reviews.c.user_id == user_id)
    )
    earlier = mine if answer_id is None else mine.where(reviews.c.id < answer_id)
    with engine.connect() as con:
        prev = con.execute(earlier.order_by(reviews.c.id.desc()).limit(1)).scalar_one_or_none()
        nxt = (
            None
            if answer_id is None
            else con.execute(
                mine.where(reviews.c.id > answer_id).order_by(reviews.c.id).limit(1)
            ).scalar_one_or_none()
        )
    return prev, nxt


def _given_item(engine: Engine, campaign_id: int, item_id: int, user_id: int) -> Row[Any]:
    """The item if it is the user's to see (404 if there is none, 403 if not given to them)."""
    item = get_item(engine, campaign_id, item_id)
    with engine.connect() as con:
        given = item_given(con, campaign_id, item_id, user_id)
    if not given:
        raise HTTPException(
            403, "This item is not given to you; go on with your next item in the campaign."
        )
    return item


@router.get("/c/{campaign_id}/i/{item_id}", response_class=HTMLResponse)
def review_screen(
    request: Request, campaign_id: int, item_id: int, user: Reviewer, engine: EngineDep
) -> Response:
    """The review screen of one item, with the user's own saved answer."""
    campaign = get_campaign(engine, campaign_id)
    item = _given_item(engine, campaign_id, item_id, user.id)
    with engine.connect() as con:
        # Only the user's own answer: reviewers never see each other's.
        mine = con.execute(
            sa.select(reviews).where(reviews.c.item_id == item_id, reviews.c.user_id == user.id)
        ).first()
    prev_id, next_id = _neighbours(engine, campaign_id, user.id, mine.id if mine else None)
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
        limits={"comment": MAX_COMMENT, "caption": MAX_CAPTION},
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
    """Save the user's answer (new or changed) and go to their next item.

    403 unless the item is given to the user; 400 for a bad answer; either changes nothing.
    """
    with engine.begin() as con:
        item = con.execute(
            sa.select(items)
            .where(items.c.id == item_id, items.c.campaign_id == campaign_id)
            .with_for_update()
        ).first()
        if item is None or not item_given(con, campaign_id, item_id, user.id):
            raise HTTPException(403, NOT_GIVEN)
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
        old = con.execute(
            sa.select(reviews).where(reviews.c.item_id == item_id, reviews.c.user_id == user.id)
        ).first()
        # A skip turned into an answer adds one: not to an item that has all its answers.
        adds_answer = old is not None and old.skipped and not values["skipped"]
        if (
            adds_answer
            and not con.execute(
                sa.select(items.c.id).where(items.c.id == item_id, needs_answers())
            ).first()
        ):
            raise HTTPException(403, NOT_GIVEN)
        save_review(con, user, item_id, old, values)
    return RedirectResponse(f"/c/{campaign_id}/next", status_code=303)


@router.get("/c/{campaign_id}/i/{item_id}/chip/{kind}.png")
def chip(
    campaign_id: int,
    item_id: int,
    kind: str,
    user: Reviewer,
    engine: EngineDep,
    dataset: DatasetDep,
) -> Response:
    """The item's cached true- or false-colour chip (403 unless the item is given to the user)."""
    item = _given_item(engine, campaign_id, item_id, user.id)
    try:
        path = dataset.chip_path(item.sample_id, kind)
    except DatasetError:
        raise HTTPException(404, "No such image.") from None
    if not path.exists():
        raise HTTPException(404, "The chip image was not cached for this item.")
    return FileResponse(path, media_type="image/png")


def _seconds(text: str) -> float | None:
    # Time on the item, as the page writes it ("12.5"); a tab left open for days counts a day.
    if not text:
        return None
    if not _SECONDS.fullmatch(text):
        raise BadForm(f"seconds must be a number like 12.5 in the digits 0-9, got {shown(text)}")
    return min(float(text), 86400.0)


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
    note = comment.strip()
    if len(note) > MAX_COMMENT:
        raise BadForm(f"the comment has {len(note)} characters; the limit is {MAX_COMMENT}")
    out: dict[str, Any] = {"comment": note or None, "seconds": _seconds(seconds)}
    if skip_reason:
        if skip_reason not in SKIP_REASONS:
            raise BadForm(f"unknown skip reason {shown(skip_reason)}")
        return {
            **out,
            "skipped": True,
            "skip_reason": skip_reason,
            "completeness": None,
            "hallucinations": None,
            "flags": [],
            "edited_caption": None,
        }
    if not completeness or not hallucinations:
        raise BadForm("rate completeness (1-6) and the number of hallucinations (0-3)")
    rating = ascii_int("completeness", completeness, 1, len(COMPLETENESS))
    count = ascii_int("hallucinations", hallucinations, 0, len(HALLUCINATIONS) - 1)
    parsed = bounded_json("flags", flags or "[]", max_chars=MAX_FLAGS_CHARS, max_depth=_FLAGS_DEPTH)
    if not isinstance(parsed, list) or len(parsed) > len(item.sentences):
        raise BadForm("flags must be a list, at most one per sentence")
    clean, seen = [], set()
    for f in parsed:
        if not isinstance(f, dict) or set(f) != {"sentence", "type"}:
            raise BadForm("each flag is {sentence, type}")
        s, t = f["sentence"], f["type"]
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < len(item.sentences):
            raise BadForm(
                f"flag on sentence {shown(str(s))}: the caption has {len(item.sentences)} sentences"
            )
        if t not in FLAG_TYPES:
            raise BadForm(f"unknown hallucination type {shown(str(t))}")
        if s in seen:
            raise BadForm(f"sentence {s} flagged twice")
        seen.add(s)
        clean.append({"sentence": s, "type": t})
    if count < min(len(clean), len(HALLUCINATIONS) - 1):
        raise BadForm(f"{len(clean)} flagged claims but {count} hallucinations")
    edited = edited_caption.strip()
    if edited == item.caption.strip():
        edited = ""  # the caption as shown, unchanged: no edit, however long the caption is
    if len(edited) > MAX_CAPTION:
        raise BadForm(
            f"the edited caption has {len(edited)} characters; the limit is {MAX_CAPTION}"
        )
    return {
        **out,
        "skipped": False,
        "skip_reason": None,
        "completeness": rating,
        "hallucinations": count,
        "flags": sorted(clean, key=lambda f: f["sentence"]),
        "edited_caption": edited or None,
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


def save_review(
    con: Connection, user: User, item_id: int, old: Row[Any] | None, values: dict[str, Any]
) -> None:
    """Insert (``old`` None) or update the user's review of an item, with the audit row.

    In the caller's transaction, which has checked that the item is given to the user.
    """
    t = now()
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
        con.execute(reviews.update().where(reviews.c.id == old.id).values(updated_at=t, **values))
        audit_log(
            con,
            user_id=user.id,
            action="update_review",
            entity="review",
            entity_id=old.id,
            before={k: getattr(old, k) for k in _REVIEW_FIELDS},
            after={k: values[k] for k in _REVIEW_FIELDS},
        )
