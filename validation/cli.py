"""``eocap review``: serve the review app, manage accounts and campaigns, export, apply."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

SUBCOMMANDS = ("serve", "user", "unlock", "campaign", "export", "apply")

EPILOG = """\
examples:
  eocap review user output/demo alice --role admin     create an account (asks for a password)
  eocap review unlock output/demo alice                 lift a lockout after failed logins
  eocap review campaign output/demo pilot --size 60 --overlap 0.5
  eocap review output/demo                             serve the app on http://127.0.0.1:8700/
  eocap review output/demo --db postgresql://eocap:pw@db/eocap   reviews in PostgreSQL
  eocap review export output/demo reviews.parquet      every review, one row each
  eocap review apply output/demo                       write review results beside the shards

The database defaults to OUTPUT/review/reviews.db (SQLite); EOCAP_REVIEW_DB sets a URL for all
commands. Docs: docs/review.md.
"""


def _engine_and_dataset(args: argparse.Namespace) -> tuple[Any, Any]:
    from .dataset import Dataset
    from .db import connect, database_url

    dataset = Dataset(args.output, getattr(args, "overture", None))
    return connect(database_url(args.db, args.output)), dataset


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the review app for a dataset until Ctrl-C."""
    from pipeline.io.serve import serve_app

    from .app import create_app
    from .db import database_url

    app = create_app(
        args.output,
        database_url(args.db, args.output),
        overture=args.overture,
        session_hours=args.session_hours,
        secure_cookies=args.secure_cookies,
    )
    if args.port_file is None:
        console.print(f"eocap review: http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    serve_app(app, args.port, args.port_file, host=args.host)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """Create an account (the password comes from EOCAP_REVIEW_PASSWORD or a prompt)."""
    from .auth import AuthError, create_user, set_password

    engine, _ = _engine_and_dataset(args)
    password = os.environ.get("EOCAP_REVIEW_PASSWORD") or getpass.getpass(
        f"password for {args.name}: "
    )
    try:
        if args.reset_password:
            set_password(engine, args.name, password)
        else:
            create_user(engine, args.name, password, args.role)
    except AuthError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    console.print(
        f"{'password reset for' if args.reset_password else 'created'} {args.name} ({args.role})"
    )
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Lift an account's lockout after too many failed logins (as the app's Logins page does)."""
    from .auth import unlock

    engine, _ = _engine_and_dataset(args)
    try:
        unlocked = unlock(engine, args.name)
    finally:
        engine.dispose()
    if not unlocked:
        console.print(
            f"[bold red]error:[/bold red] {args.name!r} is not locked (see /admin/logins)"
        )
        return 1
    console.print(f"unlocked {args.name}")
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    """Draw a review campaign (or grow one with --grow-to)."""
    import sqlalchemy as sa
    from pydantic import ValidationError

    from .campaigns import CampaignSettings, create_campaign, grow_campaign
    from .dataset import DatasetError
    from .db import campaigns, items

    engine, dataset = _engine_and_dataset(args)
    try:
        if args.grow_to:
            with engine.connect() as con:
                row = con.execute(
                    sa.select(campaigns.c.id).where(campaigns.c.name == args.name)
                ).first()
            if row is None:
                raise ValueError(f"no campaign {args.name!r}")
            added = grow_campaign(engine, dataset, row.id, args.grow_to)
            console.print(f"campaign {args.name}: {added} items added")
            return 0
        settings = CampaignSettings.model_validate(
            {
                "size": args.size,
                "seed": args.seed,
                "allocation": args.allocation,
                "overlap_share": args.overlap,
                "overlap_reviewers": args.reviewers,
                "gold_share": args.gold,
                **({} if args.gold_gap is None else {"gold_gap": args.gold_gap}),
            }
        )
        cid = create_campaign(engine, dataset, args.name, settings)
    except (ValidationError, ValueError, DatasetError) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    with engine.connect() as con:
        rows = con.execute(
            sa.select(items.c.is_gold, items.c.needed_reviews).where(items.c.campaign_id == cid)
        ).fetchall()
    real = [r for r in rows if not r.is_gold]
    console.print(
        f"campaign {args.name}: {len(real)} items ({sum(r.needed_reviews > 1 for r in real)} for "
        f"several reviewers) and {len(rows) - len(real)} gold items"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write every review to a Parquet file."""
    from .results import export_reviews

    engine, _ = _engine_and_dataset(args)
    n = export_reviews(engine, args.path)
    console.print(f"{n} reviews -> {args.path}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Write review status, ratings and edited captions to shards/_review/ (pixels untouched)."""
    from .results import apply_reviews

    engine, dataset = _engine_and_dataset(args)
    counts = apply_reviews(engine, dataset)
    table = Table(title="review results applied", show_header=False)
    for key, value in sorted(counts.items()):
        table.add_row(key, str(value))
    Console().print(table)
    return 0


def add_review_parser(sub: Any) -> None:
    """Add ``review`` and its subcommands to the ``eocap`` parser."""
    review = sub.add_parser(
        "review",
        help=(
            "the review app: experts validate captions"
            " (serve, user, unlock, campaign, export, apply)"
        ),
        description=__doc__ + "\n\n`eocap review OUTPUT` is short for `eocap review serve OUTPUT`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = review.add_subparsers(dest="review_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = rsub.add_parser(name, help=help_text, description=func.__doc__)
        p.add_argument("output", type=Path, help="the dataset (an eocap output directory)")
        p.add_argument(
            "--db",
            default=os.environ.get("EOCAP_REVIEW_DB"),
            help="database URL (default: OUTPUT/review/reviews.db; or EOCAP_REVIEW_DB)",
        )
        p.set_defaults(func=func)
        return p

    p = add("serve", cmd_serve, "serve the review app")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    p.add_argument("--port", type=int, default=8700, help="port (%(default)s; 0: any free port)")
    p.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument(
        "--session-hours", type=float, default=8.0, help="sessions expire after (%(default)s h)"
    )
    p.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)"
    )
    p.add_argument(
        "--overture",
        type=Path,
        help="Overture tree for the map overlay of campaigns drawn in the app (default: the run's)",
    )
    p = add("user", cmd_user, "create an account or reset its password")
    p.add_argument("name", help="user name")
    p.add_argument("--role", choices=["reviewer", "admin"], default="reviewer")
    p.add_argument("--reset-password", action="store_true", help="set a new password instead")
    p = add("unlock", cmd_unlock, "lift an account's lockout after failed logins")
    p.add_argument("name", help="user name")
    p = add("campaign", cmd_campaign, "draw a stratified, seeded review campaign")
    p.add_argument("name", help="campaign name")
    p.add_argument("--size", type=int, default=100, help="items to draw (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allocation", choices=["equal", "proportional"], default="equal")
    p.add_argument(
        "--overlap", type=float, default=0.2, help="share of items for several reviewers"
    )
    p.add_argument("--reviewers", type=int, default=2, help="reviewers per shared item (2-3)")
    p.add_argument("--gold", type=float, default=0.05, help="gold items per item (%(default)s)")
    p.add_argument(
        "--gold-gap",
        type=int,
        help="a gold item and its source are more than this many items apart in every "
        "reviewer's order (default: CampaignSettings.gold_gap, docs/review.md)",
    )
    p.add_argument("--grow-to", type=int, help="grow the existing campaign NAME to this many items")
    p.add_argument(
        "--overture",
        type=Path,
        help="Overture tree for the map overlay (default: the run's overture.source)",
    )
    p = add("export", cmd_export, "export every review to Parquet")
    p.add_argument("path", type=Path, help="the Parquet file to write")
    add("apply", cmd_apply, "write review results beside the shards (shards/_review/)")


def normalize_argv(argv: list[str]) -> list[str]:
    """``eocap review OUTPUT ...`` means ``eocap review serve OUTPUT ...``."""
    if (
        len(argv) >= 2
        and argv[0] == "review"
        and argv[1] not in SUBCOMMANDS
        and not argv[1].startswith("-")
    ):
        return ["review", "serve", *argv[1:]]
    return argv
