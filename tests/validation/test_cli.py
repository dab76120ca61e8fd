"""`eocap review` subcommands end to end: accounts, campaigns (draw, grow), export, apply."""

import shutil

import pyarrow.parquet as pq
import sqlalchemy as sa

from flows.cli import main
from validation.db import connect, items, reviews, users
from validation.results import _consensus


def test_review_cli(review_dataset, tmp_path, monkeypatch):
    root = tmp_path / "dataset"
    shutil.copytree(review_dataset, root, ignore=shutil.ignore_patterns("review"))
    monkeypatch.setenv("EOCAP_REVIEW_PASSWORD", "long-enough")
    assert main(["review", "user", str(root), "ann", "--role", "admin"]) == 0
    assert main(["review", "user", str(root), "ann"]) == 2  # taken
    monkeypatch.setenv("EOCAP_REVIEW_PASSWORD", "short")
    assert main(["review", "user", str(root), "bob"]) == 2  # too short
    assert main(["review", "campaign", str(root), "c", "--size", "3", "--gold", "0"]) == 0
    assert main(["review", "campaign", str(root), "c", "--size", "3"]) == 2  # exists
    assert main(["review", "campaign", str(root), "d", "--reviewers", "7"]) == 2  # 2-3 only
    assert main(["review", "campaign", str(root), "d", "--gold-gap", "0"]) == 2  # 1-100 only
    assert main(["review", "campaign", str(root), "c", "--grow-to", "5"]) == 0
    engine = connect(f"sqlite:///{root / 'review' / 'reviews.db'}")
    with engine.begin() as con:
        uid = con.execute(sa.select(users.c.id)).scalar_one()
        ids = [r.id for r in con.execute(sa.select(items.c.id).order_by(items.c.position))]
        assert len(ids) == 5
        now = sa.func.current_timestamp()
        for n, item in enumerate(ids[:2]):
            con.execute(
                reviews.insert().values(
                    item_id=item,
                    user_id=uid,
                    completeness=2 + 3 * n,
                    hallucinations=n,
                    flags=[],
                    skipped=False,
                    submitted_at=now,
                    updated_at=now,
                    edited_caption="Fixed." if n == 1 else None,
                )
            )
    engine.dispose()
    assert main(["review", "export", str(root), str(tmp_path / "r.parquet")]) == 0
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2
    assert main(["review", "apply", str(root)]) == 0
    applied = pq.read_table(list((root / "shards" / "_review").glob("*.parquet")))
    assert sorted(applied.column("review_status").to_pylist()) == ["accepted", "edited"]
    assert "Fixed." in applied.column("edited_caption").to_pylist()


def test_consensus_rules():
    base = {
        "campaign": "c",
        "skipped": False,
        "flags": [],
        "edited_caption": None,
        "caption": "A lake.",
        "updated_at": __import__("datetime").datetime(2026, 1, 1),
    }
    ok = _consensus(
        [
            {**base, "completeness": 2, "hallucinations": 0},
            {**base, "completeness": 3, "hallucinations": 0},
        ]
    )
    assert ok["review_status"] == "accepted" and ok["completeness"] == 2.5
    bad = _consensus(
        [
            {
                **base,
                "completeness": 2,
                "hallucinations": 1,
                "flags": [{"sentence": 0, "type": "object"}],
            }
        ]
    )
    assert bad["review_status"] == "rejected" and bad["hallucination_types"] == ["object"]
    same = _consensus(
        [{**base, "completeness": 1, "hallucinations": 0, "edited_caption": "A lake."}]
    )
    assert same["review_status"] == "accepted"  # an "edit" equal to the caption is no edit
    skipped = _consensus([{**base, "skipped": True, "completeness": None, "hallucinations": None}])
    assert skipped["review_status"] == "skipped"
