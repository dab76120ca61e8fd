"""Review campaigns: seeded, stratified samples of a dataset, with overlap and gold items.

Strata are (dominant land-cover class, season, latitude band, cloud-fraction bin, captioner and
prompt version). Each stratum's samples are ordered by a seeded hash of their id, and items are
drawn from the strata in a fixed sequence (round-robin for ``equal`` allocation, largest remaining
quota for ``proportional``). That sequence does not depend on the size asked for, so a campaign of
200 items is the first 200 draws of a campaign of 500: growing a campaign adds the next draws,
and the same seed on the same dataset gives the same items.

A share of items (``overlap_share``) needs ``overlap_reviewers`` reviews for agreement; the rest
need one. Gold items repeat a drawn sample with one planted sentence that the map contradicts;
every reviewer meets them, and flagging the planted sentence is the known answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections import defaultdict
from dataclasses import asdict
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, model_validator
from rich.progress import Progress
from sqlalchemy.engine import Connection, Engine

from .dataset import Dataset, DatasetError, FeatureReader, fact_lines, split_sentences
from .db import audit_log, campaigns, items, now, reviews

__all__ = [
    "FLAG_TYPES",
    "SKIP_REASONS",
    "CampaignSettings",
    "create_campaign",
    "grow_campaign",
    "next_item",
    "stratum_of",
    "user_progress",
]

FLAG_TYPES = {
    "object": "object that is not there",
    "attribute": "wrong attribute (colour, size, shape)",
    "count": "wrong count",
    "position": "wrong position",
    "land_cover": "wrong land cover",
    "not_visible": "not visible at 10 m",
}
"""Hallucination types a reviewer can flag a sentence with (key: label)."""

SKIP_REASONS = {
    "cloud": "too cloudy / hazy to judge",
    "no_data": "image missing or broken",
    "unsure": "not sure / outside my expertise",
    "other": "other",
}

COMPLETENESS = ("Excellent", "Good", "Average", "Below average", "Poor", "Terrible")
"""The Llama3-MS-CLIP completeness scale; stored as 1 (Excellent) .. 6 (Terrible)."""
HALLUCINATIONS = ("0", "1", "2", "3+")
"""Hallucinations per caption, as in the Llama3-MS-CLIP study; stored as 0..3."""

STRATA = ("land_cover", "season", "lat_band", "cloud", "captioner")


class CampaignSettings(BaseModel):
    """How a campaign draws and assigns its items.

    Attributes:
        size: Items to draw (gold items come on top).
        seed: Seed of the draw, the overlap choice and the gold items.
        allocation: ``equal`` (every stratum alike, rare strata seen) or ``proportional``.
        strata: Which of land_cover, season, lat_band, cloud, captioner define strata.
        overlap_share: Share of items reviewed by several reviewers (agreement).
        overlap_reviewers: Reviewers per overlap item (2-3).
        gold_share: Gold items per drawn item (0.1 = one gold item per ten).
    """

    size: int = Field(100, ge=1, le=100_000)
    seed: int = 0
    allocation: Literal["equal", "proportional"] = "equal"
    strata: list[str] = Field(default_factory=lambda: list(STRATA))
    overlap_share: float = Field(0.2, ge=0.0, le=1.0)
    overlap_reviewers: int = Field(2, ge=2, le=3)
    gold_share: float = Field(0.05, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _known_strata(self) -> CampaignSettings:
        unknown = set(self.strata) - set(STRATA)
        if unknown:
            raise ValueError(f"strata: unknown {sorted(unknown)}; choose from {list(STRATA)}")
        return self


def _season(month: int, lat: float) -> str:
    north = (
        "winter",
        "winter",
        "spring",
        "spring",
        "spring",
        "summer",
        "summer",
        "summer",
        "autumn",
        "autumn",
        "autumn",
        "winter",
    )[month - 1]
    if lat >= 0:
        return north
    return {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}[north]


def _cloud_bin(fraction: float | None) -> str:
    if fraction is None or math.isnan(fraction):
        return "unknown"
    for limit, label in ((0.05, "clear <5%"), (0.25, "5-25%"), (0.6, "25-60%")):
        if fraction < limit:
            return label
    return ">60%"


def stratum_of(row: dict[str, Any]) -> dict[str, str]:
    """A sample's stratum values (all five, whether the campaign uses them or not)."""
    lat = float(row["lat"])
    band = math.floor(lat / 15.0) * 15
    cover = (row.get("context") or {}).get("land_cover") or []
    when = row.get("datetime")
    return {
        "land_cover": cover[0]["class"] if cover else "unmapped",
        "season": _season(when.month, lat) if when is not None else str(row.get("period")),
        "lat_band": f"{abs(band)}-{abs(band + 15)}°{'N' if band >= 0 else 'S'}",
        "cloud": _cloud_bin(row.get("cloud_fraction")),
        "captioner": f"{row.get('captioner')} / {row.get('prompt_version')}",
    }


def _rank(seed: int, salt: str, sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}:{sample_id}".encode()).digest()[:8], "big")


def _draw_order(
    strata: dict[tuple[str, ...], list[tuple[str, int]]], allocation: str, seed: int
) -> list[tuple[str, int]]:
    keys = sorted(strata)
    taken = dict.fromkeys(keys, 0)
    order: list[tuple[str, int]] = []
    total = sum(len(v) for v in strata.values())
    rounds = 0
    while len(order) < total:
        if allocation == "equal":
            # Each round visits every stratum once, in a seeded order of its own, so a small
            # campaign is spread over the strata rather than taking them alphabetically.
            rounds += 1
            for k in sorted(keys, key=lambda k: _rank(seed, f"round{rounds}", "|".join(k))):
                if taken[k] < len(strata[k]):
                    order.append(strata[k][taken[k]])
                    taken[k] += 1
        else:  # largest remaining quota (D'Hondt): stratum size / (taken + 1)
            k = max(
                (k for k in keys if taken[k] < len(strata[k])),
                key=lambda k: (len(strata[k]) / (taken[k] + 1), k),
            )
            order.append(strata[k][taken[k]])
            taken[k] += 1
    return order


def _eligible(
    dataset: Dataset, settings: CampaignSettings
) -> tuple[list[tuple[str, int]], dict[str, dict[str, str]]]:
    strata: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    stratum_by_id: dict[str, dict[str, str]] = {}
    for shard, table in dataset.summaries():
        for row in table.to_pylist():
            if row["status"] != "ok" or str(row.get("captioner", "")).startswith("rule:"):
                continue  # failed samples have no caption; rule captions need no expert
            s = stratum_of(row)
            stratum_by_id[row["sample_id"]] = s
            strata[tuple(s[k] for k in settings.strata)].append((row["sample_id"], shard))
    for members in strata.values():
        members.sort(key=lambda m: _rank(settings.seed, "draw", m[0]))
    return _draw_order(strata, settings.allocation, settings.seed), stratum_by_id


_PLANTS = (
    ("water", "A large lake fills the north-east corner of the image.", "object"),
    ("building", "Dense rows of buildings cover most of the image.", "land_cover"),
    ("roads", "A six-lane motorway with heavy traffic crosses the image.", "not_visible"),
    ("snow", "Fresh snow covers the whole scene.", "land_cover"),
)


def _plant(
    row: dict[str, Any], sentences: list[str], seed: int
) -> tuple[list[str], dict[str, Any]]:
    """Insert one sentence the map and pixels contradict; returns the sentences and the answer."""
    ctx = row.get("context") or {}
    absent = {
        "water": not ctx.get("water") and (row.get("water_fraction") or 0) < 0.01,
        "building": (ctx.get("building_share") or 0) < 0.05,
        "roads": not any(r["class"] == "motorway" for r in ctx.get("roads") or []),
        "snow": (row.get("snow_fraction") or 0) < 0.05,
    }
    choices = [p for p in _PLANTS if absent[p[0]]] or [_PLANTS[2]]
    pick = choices[_rank(seed, "plant", row["sample_id"]) % len(choices)]
    at = _rank(seed, "where", row["sample_id"]) % (len(sentences) + 1)
    out = [*sentences[:at], pick[1], *sentences[at:]]
    return out, {"sentence": at, "type": pick[2], "text": pick[1]}


_ROW_COLUMNS = [
    "sample_id",
    "caption",
    "captioner",
    "prompt_version",
    "context",
    "datetime",
    "period",
    "cloud_fraction",
    "snow_fraction",
    "water_fraction",
    "bbox",
    "crs",
    "transform",
    "rgb",
    "pixels",
    "bands",
]


def _materialise(
    con: Connection,
    dataset: Dataset,
    campaign_id: int,
    picks: list[tuple[str, int]],
    start_position: int,
    first_draw: int,
    settings: CampaignSettings,
    stratum_by_id: dict[str, dict[str, str]],
) -> int:
    by_shard: dict[int, list[str]] = defaultdict(list)
    for sid, shard in picks:
        by_shard[shard].append(sid)
    rows: dict[str, dict[str, Any]] = {}
    overture = dataset.overture_root
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(FeatureReader(overture)) if overture else None
        progress = stack.enter_context(Progress(transient=True))
        task = progress.add_task("drawing items", total=len(picks))
        for shard, sids in sorted(by_shard.items()):
            for sid, row in dataset.rows(shard, sids, _ROW_COLUMNS).items():
                dataset.cache_chips(row)
                features = [asdict(f) for f in reader.features(row)] if reader else []
                row.pop("pixels")
                row.pop("rgb")
                rows[sid] = {"row": row, "features": features}
                progress.advance(task)
    gold_every = round(1 / settings.gold_share) if settings.gold_share > 0 else 0
    position = start_position
    added = 0
    for draw, (sid, shard) in enumerate(picks):
        row, features = rows[sid]["row"], rows[sid]["features"]
        overlap = _rank(settings.seed, "overlap", sid) / 2**64 < settings.overlap_share
        sentences = split_sentences(row["caption"])
        common = {
            "campaign_id": campaign_id,
            "sample_id": sid,
            "shard": shard,
            "stratum": stratum_by_id[sid],
            "facts": fact_lines(row),
            "features": features,
            "captioner": row["captioner"],
            "prompt_version": row["prompt_version"],
        }
        con.execute(
            items.insert().values(
                **common,
                position=position,
                caption=row["caption"],
                sentences=sentences,
                needed_reviews=settings.overlap_reviewers if overlap else 1,
                is_gold=False,
                gold=None,
            )
        )
        position += 1
        added += 1
        if gold_every and (first_draw + draw) % gold_every == gold_every - 1:
            planted, answer = _plant(row, sentences, settings.seed)
            con.execute(
                items.insert().values(
                    **common,
                    position=position,
                    caption=" ".join(planted),
                    sentences=planted,
                    needed_reviews=0,  # every reviewer meets every gold item
                    is_gold=True,
                    gold=answer,
                )
            )
            position += 1
            added += 1
    return added


def create_campaign(
    engine: Engine,
    dataset: Dataset,
    name: str,
    settings: CampaignSettings,
    *,
    by: int | None = None,
) -> int:
    """Draw a campaign's items from ``dataset`` and store them; returns the campaign id.

    Raises:
        DatasetError: if the dataset has no captioned samples.
        ValueError: if a campaign with this name exists.
    """
    order, stratum_by_id = _eligible(dataset, settings)
    if not order:
        raise DatasetError(f"{dataset.root} has no captioned samples to review")
    with engine.begin() as con:
        if con.execute(sa.select(campaigns.c.id).where(campaigns.c.name == name)).first():
            raise ValueError(f"campaign {name!r} exists")
        cid = int(
            con.execute(  # type: ignore[index]
                campaigns.insert().values(
                    name=name,
                    dataset=str(dataset.root),
                    seed=settings.seed,
                    settings=settings.model_dump(),
                    created_by=by,
                    created_at=now(),
                )
            ).inserted_primary_key[0]
        )
        added = _materialise(
            con, dataset, cid, order[: settings.size], 0, 0, settings, stratum_by_id
        )
        audit_log(
            con,
            user_id=by,
            action="create_campaign",
            entity="campaign",
            entity_id=cid,
            after={"name": name, "settings": settings.model_dump(), "items": added},
        )
    return cid


def grow_campaign(
    engine: Engine, dataset: Dataset, campaign_id: int, new_size: int, *, by: int | None = None
) -> int:
    """Extend a campaign to ``new_size`` drawn items (the next draws of the same sequence).

    Returns:
        The number of items added (gold items included).

    Raises:
        ValueError: if the campaign does not exist or ``new_size`` is not larger.
    """
    with engine.connect() as con:
        row = con.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise ValueError(f"no campaign {campaign_id}")
    settings = CampaignSettings(**row.settings)
    if new_size <= settings.size:
        raise ValueError(f"campaign has {settings.size} drawn items; give a larger size")
    order, stratum_by_id = _eligible(dataset, settings)
    with engine.begin() as con:
        start = con.execute(
            sa.select(sa.func.coalesce(sa.func.max(items.c.position), -1)).where(
                items.c.campaign_id == campaign_id
            )
        ).scalar_one()
        picks = order[settings.size : new_size]
        # Positions and the gold sequence continue where the campaign stopped, so a grown
        # campaign holds the same items in the same order as one drawn at the larger size.
        added = _materialise(
            con, dataset, campaign_id, picks, start + 1, settings.size, settings, stratum_by_id
        )
        grown = settings.model_copy(update={"size": settings.size + len(picks)})
        con.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(settings=grown.model_dump())
        )
        audit_log(
            con,
            user_id=by,
            action="grow_campaign",
            entity="campaign",
            entity_id=campaign_id,
            before={"size": settings.size},
            after={"size": grown.size, "items_added": added},
        )
    return added


def _open_to(campaign_id: int, user_id: int) -> sa.ColumnElement[bool]:
    """Items of a campaign this user has not answered that still need answers."""
    done_by_user = sa.select(reviews.c.item_id).where(reviews.c.user_id == user_id)
    answered = (
        sa.select(sa.func.count())
        .where(reviews.c.item_id == items.c.id, reviews.c.skipped.is_(False))
        .scalar_subquery()
    )
    return sa.and_(
        items.c.campaign_id == campaign_id,
        items.c.id.not_in(done_by_user),
        sa.or_(items.c.needed_reviews == 0, answered < items.c.needed_reviews),
    )


def next_item(engine: Engine, campaign_id: int, user_id: int) -> int | None:
    """The first item (by position) this user has not answered that still needs reviews."""
    query = (
        sa.select(items.c.id)
        .where(_open_to(campaign_id, user_id))
        .order_by(items.c.position)
        .limit(1)
    )
    with engine.connect() as con:
        row = con.execute(query).first()
    return None if row is None else int(row.id)


def user_progress(engine: Engine, campaign_id: int, user_id: int) -> tuple[int, int]:
    """(items this user answered, that plus the items still open to them) in a campaign."""
    with engine.connect() as con:
        done = con.execute(
            sa.select(sa.func.count())
            .select_from(reviews.join(items, items.c.id == reviews.c.item_id))
            .where(items.c.campaign_id == campaign_id, reviews.c.user_id == user_id)
        ).scalar_one()
        remaining = con.execute(
            sa.select(sa.func.count()).select_from(items).where(_open_to(campaign_id, user_id))
        ).scalar_one()
    return int(done), int(done) + int(remaining)
