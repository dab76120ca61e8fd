"""Training curves as a self-contained SVG (no plotting library): loss and samples/s by step."""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path

__all__ = ["line_chart", "training_curves_svg"]


def line_chart(
    title: str, xs: list[float], ys: list[float], *, width: int = 460, height: int = 220
) -> str:
    """One line series as an SVG ``<g>`` group with axes' extremes labelled."""
    left, right, top, bottom = 56, 12, 24, 28
    if not xs:
        return f'<g><text x="{left}" y="{top}">{escape(title)}: no data</text></g>'
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / span_x * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / span_y * plot_h

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    return (
        f'<g><text x="{left}" y="14" font-weight="bold">{escape(title)}</text>'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="#bbb"/>'
        f'<polyline points="{points}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>'
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{y1:.3g}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{y0:.3g}</text>'
        f'<text x="{left}" y="{height - 8}">step {x0:g}</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">{x1:g}</text></g>'
    )


def training_curves_svg(metrics_csv: Path, output: Path) -> Path:
    """Loss and throughput of a run's ``metrics.csv`` side by side, written to ``output``."""
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [float(r["step"]) for r in rows]
    width, height = 460, 220
    charts = [
        line_chart("contrastive loss", steps, [float(r["loss"]) for r in rows]),
        line_chart("samples/s", steps, [float(r["samples_per_s"]) for r in rows]),
    ]
    body = "".join(
        f'<g transform="translate({i * width},0)">{chart}</g>' for i, chart in enumerate(charts)
    )
    output.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">{body}</svg>\n'
    )
    return output
