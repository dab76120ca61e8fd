"""What reviews add up to: dashboard figures, agreement, the Parquet export, and ``apply``.

``apply`` writes one ``shards/_review/NNNNN_review.parquet`` per shard (keyed by ``sample_id``)
beside the pixel shards, which are never rewritten. Join them in DuckDB with
``FROM 'shards/*.parquet' s LEFT JOIN 'shards/_review/*.parquet' r USING (sample_id)``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.io.atomic import atomic_write

from .agreement import Estimate, krippendorff_alpha, pairwise_kappa
from .campaigns import COMPLETENESS, FLAG_TYPES, HALLUCINATIONS, STRATA
from .dataset import Dataset
from .db import as_utc, campaigns, items, now, reviews, users

__all__ = [
    "REVIEW_SCHEMA",
    "CampaignResults",
    "apply_reviews",
    "campaign_results",
    "export_reviews",
    "review_records",
]


def review_records(engine: Engine, campaign_id: int | None = None) -> list[dict[str, Any]]:
    """Every review (one row each) with its item, stratum and reviewer name."""
    query = (
        sa.select(
            campaigns.c.name.label("campaign"),
            campaigns.c.dataset,
            items.c.id.label("item_id"),
            items.c.sample_id,
            items.c.shard,
            items.c.is_gold,
            items.c.gold,
            items.c.stratum,
            items.c.captioner,
            items.c.prompt_version,
            items.c.caption,
            items.c.sentences,
            users.c.username.label("reviewer"),
            reviews.c.completeness,
            reviews.c.hallucinations,
            reviews.c.flags,
            reviews.c.edited_caption,
            reviews.c.skipped,
            reviews.c.skip_reason,
            reviews.c.comment,
            reviews.c.seconds,
            reviews.c.submitted_at,
            reviews.c.updated_at,
        )
        .select_from(
            reviews.join(items, items.c.id == reviews.c.item_id)
            .join(campaigns, campaigns.c.id == items.c.campaign_id)
            .join(users, users.c.id == reviews.c.user_id)
        )
        .order_by(items.c.campaign_id, items.c.position, users.c.username)
    )
    if campaign_id is not None:
        query = query.where(items.c.campaign_id == campaign_id)
    with engine.connect() as con:
        rows = [dict(r._mapping) for r in con.execute(query)]
    for r in rows:
        r["gold_passed"] = _gold_passed(r) if r["is_gold"] else None
    return rows


def _gold_passed(r: dict[str, Any]) -> bool | None:
    if r["skipped"]:
        return None
    planted = int(r["gold"]["sentence"])
    return any(int(f["sentence"]) == planted for f in r["flags"])


REVIEW_SCHEMA = pa.schema(
    [
        ("campaign", pa.string()),
        ("item_id", pa.int64()),
        ("sample_id", pa.string()),
        ("shard", pa.int32()),
        ("is_gold", pa.bool_()),
        ("gold_passed", pa.bool_()),
        *[(f"stratum_{k}", pa.string()) for k in STRATA],
        ("captioner", pa.string()),
        ("prompt_version", pa.string()),
        ("caption", pa.string()),
        ("reviewer", pa.string()),
        ("completeness", pa.int8()),
        ("completeness_label", pa.string()),
        ("hallucinations", pa.int8()),
        (
            "flags",
            pa.list_(
                pa.struct([("sentence", pa.int32()), ("type", pa.string()), ("text", pa.string())])
            ),
        ),
        ("edited_caption", pa.string()),
        ("skipped", pa.bool_()),
        ("skip_reason", pa.string()),
        ("comment", pa.string()),
        ("seconds", pa.float32()),
        ("submitted_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Columns of the review export (one row per review)."""


def _write_atomic(table: pa.Table, path: Path) -> None:
    # Readers never see a half-written file: write beside it, then rename over it.
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def export_reviews(engine: Engine, path: Path, campaign_id: int | None = None) -> int:
    """Write every review to a Parquet file (:data:`REVIEW_SCHEMA`); returns the row count."""
    rows = []
    for r in review_records(engine, campaign_id):
        rows.append(
            {
                **{
                    k: r[k]
                    for k in (
                        "campaign",
                        "item_id",
                        "sample_id",
                        "shard",
                        "is_gold",
                        "gold_passed",
                        "captioner",
                        "prompt_version",
                        "caption",
                        "reviewer",
                        "completeness",
                        "hallucinations",
                        "edited_caption",
                        "skipped",
                        "skip_reason",
                        "comment",
                        "seconds",
                    )
                },
                **{f"stratum_{k}": r["stratum"].get(k) for k in STRATA},
                "completeness_label": COMPLETENESS[r["completeness"] - 1]
                if r["completeness"]
                else None,
                "flags": [
                    {
                        "sentence": f["sentence"],
                        "type": f["type"],
                        "text": r["sentences"][f["sentence"]],
                    }
                    for f in r["flags"]
                ],
                "submitted_at": as_utc(r["submitted_at"]),
                "updated_at": as_utc(r["updated_at"]),
            }
        )
    table = pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA)
    _write_atomic(table, path)
    return int(table.num_rows)


@dataclass
class CampaignResults:
    """The dashboard's numbers for one campaign."""

    items: int = 0
    items_complete: int = 0
    gold_items: int = 0
    reviews: int = 0
    skipped: int = 0
    completeness: list[int] = field(default_factory=lambda: [0] * len(COMPLETENESS))
    hallucinations: list[int] = field(default_factory=lambda: [0] * len(HALLUCINATIONS))
    flag_types: dict[str, int] = field(default_factory=dict)
    rate_by: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)
    agreement: dict[str, Estimate] = field(default_factory=dict)
    kappa: list[tuple[str, str, Estimate]] = field(default_factory=list)
    reviewers: list[dict[str, Any]] = field(default_factory=list)


def campaign_results(engine: Engine, campaign_id: int, *, bootstrap: int = 1000) -> CampaignResults:
    """Counts, distributions, hallucination rates by stratum, agreement and reviewer checks."""
    res = CampaignResults()
    with engine.connect() as con:
        stats = con.execute(
            sa.select(items.c.id, items.c.is_gold, items.c.needed_reviews).where(
                items.c.campaign_id == campaign_id
            )
        ).fetchall()
    records = review_records(engine, campaign_id)
    answered = Counter(r["item_id"] for r in records if not r["skipped"])
    res.items = sum(1 for s in stats if not s.is_gold)
    res.gold_items = sum(1 for s in stats if s.is_gold)
    res.items_complete = sum(
        1 for s in stats if not s.is_gold and answered[s.id] >= s.needed_reviews
    )
    res.reviews = len(records)
    res.skipped = sum(r["skipped"] for r in records)
    real = [r for r in records if not r["is_gold"] and not r["skipped"]]
    flag_counts: Counter[str] = Counter()
    by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in real:
        res.completeness[r["completeness"] - 1] += 1
        res.hallucinations[r["hallucinations"]] += 1
        flag_counts.update(f["type"] for f in r["flags"])
        for key in STRATA:
            by[key][r["stratum"].get(key, "?")].append(int(r["hallucinations"] > 0))
        by["prompt_version"][r["prompt_version"] or "?"].append(int(r["hallucinations"] > 0))
    res.flag_types = {k: flag_counts.get(k, 0) for k in FLAG_TYPES}
    res.rate_by = {
        key: sorted(
            ((v, sum(xs) / len(xs), len(xs)) for v, xs in groups.items()), key=lambda t: t[0]
        )
        for key, groups in by.items()
    }
    res.agreement, res.kappa = _agreement(real, bootstrap)
    res.reviewers = _reviewer_table(records)
    return res


def _agreement(
    real: list[dict[str, Any]], bootstrap: int
) -> tuple[dict[str, Estimate], list[tuple[str, str, Estimate]]]:
    by_item: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in real:
        by_item[r["item_id"]][r["reviewer"]] = r
    shared = {i: rs for i, rs in by_item.items() if len(rs) >= 2}
    completeness = [{u: r["completeness"] for u, r in rs.items()} for rs in shared.values()]
    halluc = [{u: r["hallucinations"] for u, r in rs.items()} for rs in shared.values()]
    # Flags: one unit per sentence of a shared item; the value is the flag type or "none".
    flag_units: list[dict[str, Hashable]] = []
    for rs in shared.values():
        n_sent = len(next(iter(rs.values()))["sentences"])
        for s in range(n_sent):
            flag_units.append(
                {
                    u: next((f["type"] for f in r["flags"] if f["sentence"] == s), "none")
                    for u, r in rs.items()
                }
            )
    agreement = {
        "completeness (ordinal alpha)": krippendorff_alpha(
            completeness, "ordinal", bootstrap=bootstrap
        ),
        "hallucinations (ordinal alpha)": krippendorff_alpha(
            halluc, "ordinal", bootstrap=bootstrap
        ),
        "claim flags (nominal alpha)": krippendorff_alpha(
            flag_units, "nominal", bootstrap=bootstrap
        ),
    }
    ratings: dict[str, dict[int, int]] = defaultdict(dict)
    for item_id, rs in shared.items():
        for u, r in rs.items():
            ratings[u][item_id] = r["completeness"]
    kappa = [(str(a), str(b), est) for (a, b), est in pairwise_kappa(ratings, min_items=2).items()]
    return agreement, kappa


def _reviewer_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"reviews": 0, "skipped": 0, "gold": 0, "gold_passed": 0, "seconds": []}
    )
    for r in records:
        p = per[r["reviewer"]]
        p["reviews"] += 1
        p["skipped"] += int(r["skipped"])
        if r["gold_passed"] is not None:
            p["gold"] += 1
            p["gold_passed"] += int(r["gold_passed"])
        if r["seconds"]:
            p["seconds"].append(r["seconds"])
    return [
        {
            "reviewer": name,
            "reviews": p["reviews"],
            "skipped": p["skipped"],
            "gold": p["gold"],
            "gold_accuracy": p["gold_passed"] / p["gold"] if p["gold"] else None,
            "median_seconds": statistics.median(p["seconds"]) if p["seconds"] else None,
        }
        for name, p in sorted(per.items())
    ]


_APPLY_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("review_status", pa.string()),
        ("reviews", pa.int32()),
        ("completeness", pa.float32()),
        ("completeness_votes", pa.list_(pa.int8())),
        ("hallucinations", pa.float32()),
        ("hallucination_types", pa.list_(pa.string())),
        ("edited_caption", pa.string()),
        ("campaigns", pa.list_(pa.string())),
        ("reviewed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _consensus(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in rows if not r["skipped"]]
    latest = max(rows, key=lambda r: as_utc(r["updated_at"]))
    out: dict[str, Any] = {
        "reviews": len(answered),
        "campaigns": sorted({r["campaign"] for r in rows}),
        "reviewed_at": as_utc(latest["updated_at"]),
        "completeness": None,
        "completeness_votes": [r["completeness"] for r in answered],
        "hallucinations": None,
        "hallucination_types": sorted({f["type"] for r in answered for f in r["flags"]}),
        "edited_caption": None,
    }
    if not answered:
        out["review_status"] = "skipped"
        return out
    out["completeness"] = float(statistics.median(r["completeness"] for r in answered))
    out["hallucinations"] = float(statistics.median(r["hallucinations"] for r in answered))
    edits = [
        r
        for r in answered
        if r["edited_caption"] and r["edited_caption"].strip() != r["caption"].strip()
    ]
    if edits:
        out["review_status"] = "edited"
        out["edited_caption"] = max(edits, key=lambda r: as_utc(r["updated_at"]))[
            "edited_caption"
        ].strip()
    elif out["hallucinations"] == 0 and out["completeness"] <= 3:
        out["review_status"] = "accepted"  # no hallucination and Average or better
    else:
        out["review_status"] = "rejected"
    return out


def apply_reviews(engine: Engine, dataset: Dataset) -> dict[str, int]:
    """Write the reviews of ``dataset``'s samples to ``shards/_review/NNNNN_review.parquet``.

    The files are derived from the whole review database each time (idempotent; written to a
    temporary file and renamed). Gold items are left out: their captions were altered on purpose.

    Returns:
        Samples per review status, plus ``shards`` written.
    """
    root = str(dataset.root.resolve())
    by_shard: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in review_records(engine):
        if r["is_gold"] or str(Path(r["dataset"]).resolve()) != root:
            continue
        by_shard[r["shard"]][r["sample_id"]].append(r)
    layout = dataset.layout
    layout.review_results_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    for index, stale in layout.review_results().items():
        if index not in by_shard:
            stale.unlink()
    for shard, samples in sorted(by_shard.items()):
        rows = [{"sample_id": sid, **_consensus(rs)} for sid, rs in sorted(samples.items())]
        counts.update(r["review_status"] for r in rows)
        table = pa.Table.from_pylist(rows, schema=_APPLY_SCHEMA)
        table = table.replace_schema_metadata(
            {"eocap_review": json.dumps({"applied_at": now().isoformat(), "shard": shard})}
        )
        _write_atomic(table, layout.review_results_path(shard))
    counts["shards"] = len(by_shard)
    return dict(counts)
