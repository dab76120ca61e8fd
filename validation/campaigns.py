"""Review campaigns: seeded, stratified samples of a dataset, with overlap and gold items.

Strata are (dominant land-cover class, season, latitude band, cloud-fraction bin, captioner and
prompt version). Each stratum's samples are ordered by a seeded hash of their id, and items are
drawn from the strata in a fixed sequence (round-robin for ``equal`` allocation, largest remaining
quota for ``proportional``). That sequence does not depend on the size asked for, so a campaign of
200 items is the first 200 draws of a campaign of 500: growing a campaign adds the next draws,
and the same seed on the same dataset gives the same items.

A share of items (``overlap_share``) needs ``overlap_reviewers`` reviews for agreement; the rest
need one. Gold items repeat a drawn sample with one planted sentence that the map contradicts;
flagging the planted sentence is the known answer. So that a gold item does not give itself away:

- it is placed at a seeded distance of ``gold_gap + 1`` to ``4 * gold_gap`` draws before or after
  its source item (:func:`item_order`), and a reviewer is never given a gold item or its source
  while the other is among their last ``gold_gap`` answers, nor a gold item while its source is
  still open to them (:func:`next_item`), so the two are more than ``gold_gap`` apart in every
  reviewer's own order, however the other reviewers' answers thin it out;
- its caption is reworded, not the source caption plus a sentence: the sentences are rephrased
  with meaning-preserving variants (:data:`_REWORDINGS`) and the planted sentence, itself one of
  several phrasings, goes at a seeded place after the first sentence (:func:`_plant`).

A reviewer answers only the item :func:`next_item` gives them, and may change an answer they gave
(:func:`item_given`); a reviewer meets every gold item except one whose source they answered
among their last ``gold_gap`` items when nothing else is left for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import re
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
    "item_given",
    "item_order",
    "needs_answers",
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
        gold_gap: A gold item and its source item are more than this many items apart in every
            reviewer's own order (never in the same window of ``gold_gap`` items).
    """

    size: int = Field(100, ge=1, le=100_000)
    seed: int = 0
    allocation: Literal["equal", "proportional"] = "equal"
    strata: list[str] = Field(default_factory=lambda: list(STRATA))
    overlap_share: float = Field(0.2, ge=0.0, le=1.0)
    overlap_reviewers: int = Field(2, ge=2, le=3)
    gold_share: float = Field(0.05, ge=0.0, le=0.5)
    gold_gap: int = Field(10, ge=1, le=100)

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


_SLOTS = {
    "season": r"(?P<season>[a-z]+)",
    "n": r"(?P<n>\d+)",
    "dir": r"(?P<dir>(?:north|south)-(?:east|west)|north|south|east|west)",
    # Lookaheads: what must follow a phrase, kept as it is.
    "end": r"(?=[.,;!?]|$)",
    "place": r"(?=\s(?:in|across|along|near|over|at|on|around)\b)",
}

_REWORDINGS: tuple[tuple[str, ...], ...] = (
    # The template captioner's openings, and the usual openings of language models.
    (
        "^A Sentinel-2 {season} image of",
        "^Satellite view in {season} of",
        "^This {season} Sentinel-2 scene shows",
        "^Satellite image from {season} showing",
    ),
    ("^The image shows", "^This image shows", "^The scene shows", "^The image depicts"),
    ("a mix of", "a mixture of"),
    ("a landscape dominated by", "a landscape mainly covered by", "an area dominated by"),
    ("almost entirely covered by", "nearly entirely covered by", "almost completely covered by"),
    ("with almost no valid data", "with hardly any valid data", "with nearly no valid data"),
    # Where a thing is, and that it is there. "can be seen" fits one thing or several: its own
    # family, first, so that the singular and plural ones below never read it as theirs.
    ("can be seen{place}", "can be made out{place}", "can be spotted{place}"),
    ("lies{place}", "is visible{place}", "can be seen{place}", "is located{place}"),
    ("lie{place}", "are visible{place}", "can be seen{place}", "are located{place}"),
    ("is present", "is visible", "can be seen"),
    ("are present", "are visible", "can be seen"),
    ("the {dir}{end}", "the {dir}ern part{end}", "the {dir} of the image{end}"),
    ("in the centre{end}", "in the middle{end}", "in the centre of the image{end}"),
    (
        "across much of the image{end}",
        "across much of the scene{end}",
        "over much of the image{end}",
    ),
    ("flows through the image", "runs through the image", "flows across the image"),
    ("^The area is crossed by", "^The image is crossed by", "^The scene is crossed by"),
    # Amounts, and the conditions of the view.
    ("with about {n}", "with around {n}", "with roughly {n}"),
    ("^About {n}", "^Around {n}", "^Roughly {n}"),
    ("is covered by snow", "is covered with snow", "lies under snow"),
    ("hide a large part of the view", "cover a large part of the view", "hide much of the view"),
    ("has no data", "has no valid data", "holds no data"),
)
"""Phrasings that say the same thing, for rewording gold captions.

Each tuple lists ways to say one thing; ``^`` marks a sentence start and ``{slot}`` a part kept
as it is (:data:`_SLOTS`). No variant adds or drops a word of the grounding lexicon
(``pipeline.caption.claims``), a capitalised word away from the sentence start or a number, so a
reworded sentence makes the same claims (tests/validation/test_security_review.py checks this
with the grounding check itself). Most are the template captioner's own variants, so a reworded
caption reads like any other; a sentence no phrasing matches stays as it is.
"""


def _phrase_pattern(variant: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", variant.removeprefix("^"))
    body = "".join(_SLOTS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts))
    return re.compile(("^" if variant.startswith("^") else r"(?<!\w)") + body + r"(?!\w)")


_PHRASE_PATTERNS = {v: _phrase_pattern(v) for family in _REWORDINGS for v in family}


def _reword(sentence: str, rng: random.Random) -> str:
    """The sentence with each phrasing of :data:`_REWORDINGS` it uses said another way."""
    edits: list[tuple[int, int, str]] = []
    for family in _REWORDINGS:
        found = [(m, v) for v in family if (m := _PHRASE_PATTERNS[v].search(sentence))]
        if not found:
            continue
        match, said = min(found, key=lambda f: (f[0].start(), -f[0].end()))
        if any(match.start() < stop and start < match.end() for start, stop, _ in edits):
            continue  # each part of the sentence is reworded once
        other = rng.choice([v for v in family if v != said])
        slots = dict.fromkeys(_SLOTS, "") | {k: v for k, v in match.groupdict().items() if v}
        edits.append((match.start(), match.end(), other.removeprefix("^").format(**slots)))
    for start, stop, text in sorted(edits, reverse=True):
        sentence = sentence[:start] + text + sentence[stop:]
    return sentence


_DIRECTIONS = (
    "north",
    "south",
    "east",
    "west",
    "north-east",
    "north-west",
    "south-east",
    "south-west",
)

_PLANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "water",
        "object",
        (
            "A lake lies in the {dir}.",
            "A small lake can be seen in the {dir}.",
            "A reservoir is visible in the {dir}.",
            "A pond lies in the {dir}.",
        ),
    ),
    (
        "building",
        "object",
        (
            "A residential area with about {n} buildings lies in the {dir}.",
            "About {n} scattered buildings are present in the {dir}.",
        ),
    ),
    (
        "road",
        "object",
        (
            "The area is crossed by a motorway.",
            "The area is crossed by a main road.",
            "A secondary road can be seen in the {dir}.",
        ),
    ),
    (
        "snow",
        "land_cover",
        ("Part of the ground is covered by snow.", "Much of the ground is covered by snow."),
    ),
    (
        "not_visible",
        "not_visible",
        (
            "Cars can be seen along the roads in the {dir}.",
            "People can be seen in the {dir}.",
            "Cattle are visible in the {dir}.",
            "Several trucks are present in the {dir}.",
        ),
    ),
)
"""Planted sentences (what they claim, the flag type they deserve, their phrasings), written
like the template captioner's sentences."""

_PLANTED_COUNTS = (20, 40, 60, 90, 150)


def _contradicted(row: dict[str, Any]) -> dict[str, bool]:
    # The grounding check's support rules (pipeline.caption.claims, which validation may not
    # import), taken more strictly: where these hold the check finds the plant unsupported.
    ctx = row.get("context") or {}
    covers = {c["class"] for c in ctx.get("land_cover") or []}
    return {
        "water": not ctx.get("water") and (row.get("water_fraction") or 0.0) < 0.01,
        "building": not ctx.get("building_count"),
        "road": not ctx.get("roads"),
        "snow": "snow" not in covers and (row.get("snow_fraction") or 0.0) < 0.01,
        "not_visible": True,  # 10 m pixels never show cars, people or animals
    }


def _plant(
    row: dict[str, Any], sentences: list[str], seed: int
) -> tuple[list[str], dict[str, Any]]:
    """A gold caption: the sentences reworded, and one the map and pixels contradict inserted.

    Returns:
        The gold item's sentences, and its answer: ``{sentence, type, text}`` of the planted one.
    """
    rng = random.Random(f"{seed}:gold:{row['sample_id']}")
    contradicted = _contradicted(row)
    _, flag, phrasings = rng.choice([p for p in _PLANTS if contradicted[p[0]]])
    planted = rng.choice(phrasings).format(
        dir=rng.choice(_DIRECTIONS), n=rng.choice(_PLANTED_COUNTS)
    )
    planted = _reword(planted, rng)
    reworded = [_reword(s, rng) for s in sentences]
    # After the first sentence: a caption opens with the overview, a planted opening would show.
    at = rng.randint(1, len(reworded)) if reworded else 0
    out = [*reworded[:at], planted, *reworded[at:]]
    return out, {"sentence": at, "type": flag, "text": planted}


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


_GOLD_REACH = 4
"""A gold item goes ``gold_gap + 1`` to ``_GOLD_REACH * gold_gap`` draws from its source."""


def _gold_every(settings: CampaignSettings) -> int:
    return round(1 / settings.gold_share) if settings.gold_share > 0 else 0


def _gold_slot(draw: int, draws: int, settings: CampaignSettings) -> int:
    """The draw after which the gold item of ``draw`` goes.

    A seeded distance and side; the other side when the campaign has no room on the first; in a
    campaign too short for either, as far from the source as it allows. Never before the first
    draw: a campaign opens with a real item.
    """
    gap = settings.gold_gap
    salt = str(draw)
    distance = gap + 1 + _rank(settings.seed, "gold-distance", salt) % ((_GOLD_REACH - 1) * gap)
    later, earlier = draw + distance, draw - distance - 1
    sides = (later, earlier) if _rank(settings.seed, "gold-side", salt) % 2 else (earlier, later)
    for slot in sides:
        if 0 <= slot < draws:
            return slot
    return draws - 1 if draws - 1 - draw >= draw - 1 else 0


def item_order(draws: int, settings: CampaignSettings) -> list[tuple[int, bool]]:
    """The order of a campaign's items: ``(draw, is_gold)`` for its first ``draws`` draws.

    Every ``1 / gold_share``-th draw has a gold item, placed by :func:`_gold_slot`. The order is
    a function of ``draws`` and the settings only, so a campaign grown to ``draws`` is ordered as
    one drawn at that size. A gold item is more than ``gold_gap`` items from its source whenever
    the campaign has at least ``2 * _GOLD_REACH * gold_gap + 1`` draws.
    """
    gold_every = _gold_every(settings)
    golds_after: dict[int, list[int]] = defaultdict(list)
    if gold_every:
        for draw in range(gold_every - 1, draws, gold_every):
            golds_after[_gold_slot(draw, draws, settings)].append(draw)
    order: list[tuple[int, bool]] = []
    for draw in range(draws):
        order.append((draw, False))
        order += [(d, True) for d in golds_after[draw]]
    return order


def _materialise(
    con: Connection,
    dataset: Dataset,
    campaign_id: int,
    picks: list[tuple[str, int]],
    first_draw: int,
    positions: dict[tuple[int, bool], int],
    settings: CampaignSettings,
    stratum_by_id: dict[str, dict[str, str]],
) -> int:
    """Store the items of draws ``first_draw`` on (``picks``) and their gold items.

    Returns:
        The number of items added.
    """
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
    added = 0
    for draw, (sid, shard) in enumerate(picks, start=first_draw):
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
                position=positions[(draw, False)],
                caption=row["caption"],
                sentences=sentences,
                needed_reviews=settings.overlap_reviewers if overlap else 1,
                is_gold=False,
                gold=None,
            )
        )
        added += 1
        if (draw, True) in positions:
            planted, answer = _plant(row, sentences, settings.seed)
            con.execute(
                items.insert().values(
                    **common,
                    position=positions[(draw, True)],
                    caption=" ".join(planted),
                    sentences=planted,
                    needed_reviews=0,  # every reviewer meets every gold item
                    is_gold=True,
                    gold=answer,
                )
            )
            added += 1
    return added


def _positions(draws: int, settings: CampaignSettings) -> dict[tuple[int, bool], int]:
    return {key: position for position, key in enumerate(item_order(draws, settings))}


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
    picks = order[: settings.size]
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
        positions = _positions(len(picks), settings)
        added = _materialise(con, dataset, cid, picks, 0, positions, settings, stratum_by_id)
        audit_log(
            con,
            user_id=by,
            action="create_campaign",
            entity="campaign",
            entity_id=cid,
            after={"name": name, "settings": settings.model_dump(), "items": added},
        )
    return cid


def _reorder(
    con: Connection,
    campaign_id: int,
    drawn: list[tuple[str, int]],
    positions: dict[tuple[int, bool], int],
) -> None:
    """Move a campaign's stored items to their places in the order of a larger campaign."""
    draw_of = {sid: draw for draw, (sid, _) in enumerate(drawn)}
    stored = con.execute(
        sa.select(items.c.id, items.c.sample_id, items.c.is_gold).where(
            items.c.campaign_id == campaign_id
        )
    ).fetchall()
    moves = []
    for item in stored:
        if item.sample_id not in draw_of:
            raise ValueError(
                f"sample {item.sample_id} of campaign {campaign_id} is no longer among the "
                "dataset's draws (the dataset changed since it was drawn): draw a new campaign"
            )
        moves.append({"item": item.id, "place": positions[(draw_of[item.sample_id], item.is_gold)]})
    # Negative first: positions are unique, and every row moves (gold items of a short campaign
    # move to their places further on).
    con.execute(
        items.update()
        .where(items.c.campaign_id == campaign_id)
        .values(position=-1 - items.c.position)
    )
    if moves:
        con.execute(
            items.update()
            .where(items.c.id == sa.bindparam("item"))
            .values(position=sa.bindparam("place")),
            moves,
        )


def grow_campaign(
    engine: Engine, dataset: Dataset, campaign_id: int, new_size: int, *, by: int | None = None
) -> int:
    """Extend a campaign to ``new_size`` drawn items (the next draws of the same sequence).

    The items already stored move to their places in the order of the larger campaign
    (:func:`item_order`), so a grown campaign holds the same items in the same order as one
    drawn at the larger size.

    Returns:
        The number of items added (gold items included).

    Raises:
        ValueError: if the campaign does not exist, ``new_size`` is not larger, or the dataset no
            longer holds the campaign's samples among its draws.
    """
    with engine.connect() as con:
        row = con.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise ValueError(f"no campaign {campaign_id}")
    settings = CampaignSettings(**row.settings)
    if new_size <= settings.size:
        raise ValueError(f"campaign has {settings.size} drawn items; give a larger size")
    order, stratum_by_id = _eligible(dataset, settings)
    drawn = order[:new_size]
    picks = drawn[settings.size :]
    positions = _positions(len(drawn), settings)
    with engine.begin() as con:
        _reorder(con, campaign_id, drawn, positions)
        added = _materialise(
            con, dataset, campaign_id, picks, settings.size, positions, settings, stratum_by_id
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


def needs_answers(table: sa.FromClause = items) -> sa.ColumnElement[bool]:
    """Items (of ``table``, ``items`` or an alias of it) that still need answers.

    A gold item always does (every reviewer's); another until it has its planned answers.
    """
    answered = (
        sa.select(sa.func.count())
        .where(reviews.c.item_id == table.c.id, reviews.c.skipped.is_(False))
        .scalar_subquery()
    )
    return sa.or_(table.c.needed_reviews == 0, answered < table.c.needed_reviews)


def _open_to(
    campaign_id: int, user_id: int, table: sa.FromClause = items
) -> sa.ColumnElement[bool]:
    """Items of a campaign this user has not answered that still need answers."""
    done_by_user = sa.select(reviews.c.item_id).where(reviews.c.user_id == user_id)
    return sa.and_(
        table.c.campaign_id == campaign_id,
        table.c.id.not_in(done_by_user),
        needs_answers(table),
    )


def _recent_samples(con: Connection, campaign_id: int, user_id: int) -> list[str]:
    """The samples of the user's last ``gold_gap`` answers in a campaign (their own order)."""
    settings = con.execute(
        sa.select(campaigns.c.settings).where(campaigns.c.id == campaign_id)
    ).scalar_one_or_none()
    if settings is None:
        return []
    window = CampaignSettings.model_validate(settings).gold_gap
    return list(
        con.execute(
            sa.select(items.c.sample_id)
            .select_from(reviews.join(items, items.c.id == reviews.c.item_id))
            .where(items.c.campaign_id == campaign_id, reviews.c.user_id == user_id)
            .order_by(reviews.c.id.desc())
            .limit(window)
        ).scalars()
    )


def _next_item(con: Connection, campaign_id: int, user_id: int) -> int | None:
    # Twins are a source item and its gold item (the same sample). An item waits while its twin
    # is among the user's last gold_gap answers, so the two are never close in the user's order.
    # A gold item also waits while its source is still open to the user: the user meets the
    # source first (or never, once others have answered it), so a source is only ever held
    # back when it reopens (an answer changed to a skip) and cannot be left unanswered by every
    # reviewer having just met its gold item.
    recent = _recent_samples(con, campaign_id, user_id)
    source = items.alias("source")
    source_open = (
        sa.exists()
        .where(
            source.c.sample_id == items.c.sample_id,
            source.c.is_gold.is_(False),
            _open_to(campaign_id, user_id, source),
        )
        .correlate(items)
    )
    return con.execute(
        sa.select(items.c.id)
        .where(
            _open_to(campaign_id, user_id),
            items.c.sample_id.not_in(recent),
            sa.or_(items.c.is_gold.is_(False), ~source_open),
        )
        .order_by(items.c.position)
        .limit(1)
    ).scalar_one_or_none()


def next_item(engine: Engine, campaign_id: int, user_id: int) -> int | None:
    """The item the user is given now, or None when nothing is left for them.

    It is the first item (by position) they have not answered that still needs answers, whose
    twin is not among their last ``gold_gap`` answers and, for a gold item, whose source is no
    longer open to them.
    """
    with engine.connect() as con:
        return _next_item(con, campaign_id, user_id)


def item_given(con: Connection, campaign_id: int, item_id: int, user_id: int) -> bool:
    """Whether the item is the user's to see and answer.

    It is if :func:`next_item` gives it to them now, or if they answered it (an answer can be
    changed).
    """
    answered = con.execute(
        sa.select(reviews.c.id).where(reviews.c.item_id == item_id, reviews.c.user_id == user_id)
    ).first()
    return answered is not None or _next_item(con, campaign_id, user_id) == item_id


def user_progress(engine: Engine, campaign_id: int, user_id: int) -> tuple[int, int]:
    """(items this user answered, that plus the items still open to them) in a campaign.

    Nothing is open to a user who has no next item, even a gold item that waits for them.
    """
    with engine.connect() as con:
        done = con.execute(
            sa.select(sa.func.count())
            .select_from(reviews.join(items, items.c.id == reviews.c.item_id))
            .where(items.c.campaign_id == campaign_id, reviews.c.user_id == user_id)
        ).scalar_one()
        remaining = (
            con.execute(
                sa.select(sa.func.count()).select_from(items).where(_open_to(campaign_id, user_id))
            ).scalar_one()
            if _next_item(con, campaign_id, user_id) is not None
            else 0
        )
    return int(done), int(done) + int(remaining)
