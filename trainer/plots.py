"""Charts without a plotting library: training curves (SVG), learning curves and bars (+ PNG).

The learning curves and bar charts are drawn once, as a list of shapes (:class:`Line`,
:class:`Label`; a bar is a thick line), and rendered twice: as SVG text and, with Pillow (a
core dependency), as a PNG. No matplotlib:
it is not in the stack, and two renderers of a few shapes are less than a plotting library.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal

__all__ = [
    "Bar",
    "Curve",
    "Label",
    "Line",
    "bar_chart_shapes",
    "bar_charts",
    "learning_curve_shapes",
    "learning_curves",
    "line_chart",
    "training_curves_svg",
]


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


@dataclass(frozen=True)
class Line:
    """A polyline in pixels."""

    points: tuple[tuple[float, float], ...]
    colour: str = "#888888"
    width: float = 1.0
    dashed: bool = False


@dataclass(frozen=True)
class Label:
    """A text anchored at its baseline: ``start``, ``middle`` or ``end`` at ``x``."""

    x: float
    y: float
    text: str
    anchor: Literal["start", "middle", "end"] = "start"
    colour: str = "#000000"
    bold: bool = False


Shape = Line | Label


@dataclass(frozen=True)
class Curve:
    """One model's scores by label count: means with a ± spread bar at each point."""

    name: str
    labels: Sequence[float]
    means: Sequence[float]
    spreads: Sequence[float]


@dataclass(frozen=True)
class Bar:
    """One bar of a group: a mean score (0-1) with a ± spread whisker."""

    name: str
    mean: float
    spread: float


CURVE_COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df")
"""Colours of the curves of a panel, in order."""

PANELS_PER_ROW = 2
"""Learning-curve panels side by side; more start a new row."""

_PANEL_W, _PANEL_H = 380, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 16, 44, 40


def learning_curve_shapes(
    panels: Sequence[tuple[str, float, Sequence[Curve]]], metric: str
) -> tuple[int, int, list[Shape]]:
    """Panels of score (0-1) against labels (log scale), :data:`PANELS_PER_ROW` to a row.

    Args:
        panels: (title, chance level, curves) per panel.
        metric: The score's name, for the axis.

    Returns:
        Width, height and the shapes to draw.
    """
    shapes: list[Shape] = []
    plot_w, plot_h = _PANEL_W - _LEFT - _RIGHT, _PANEL_H - _TOP - _BOTTOM
    for i, (title, chance, curves) in enumerate(panels):
        row, column = divmod(i, PANELS_PER_ROW)
        top = row * _PANEL_H
        x0, y0 = column * _PANEL_W + _LEFT, top + _TOP
        counts = [n for c in curves for n in c.labels]
        lo, hi = math.log(min(counts)), math.log(max(counts))
        span = (hi - lo) or 1.0

        def px(n: float, x0: float = x0, lo: float = lo, span: float = span) -> float:
            return x0 + (math.log(n) - lo) / span * plot_w

        def py(score: float, y0: float = y0) -> float:
            return y0 + (1 - score) * plot_h

        shapes.append(Label(x0, top + 16, title, bold=True))
        shapes.extend(_score_axis(x0, y0, plot_w, plot_h, chance))
        for n in sorted(set(counts)):
            shapes.append(Line(((px(n), y0 + plot_h), (px(n), y0 + plot_h + 4))))
            shapes.append(Label(px(n), y0 + plot_h + 16, f"{n:.0f}", "middle"))
        shapes.append(
            Label(x0 + plot_w / 2, top + _PANEL_H - 6, f"labels (log); {metric}", "middle")
        )
        for j, curve in enumerate(curves):
            colour = CURVE_COLOURS[j % len(CURVE_COLOURS)]
            points = [(px(n), py(m)) for n, m in zip(curve.labels, curve.means, strict=True)]
            shapes.append(Line(tuple(points), colour, 1.5))
            for (x, _), mean, spread in zip(points, curve.means, curve.spreads, strict=True):
                bar = ((x, py(min(mean + spread, 1.0))), (x, py(max(mean - spread, 0.0))))
                shapes.append(Line(bar, colour))
            key_x, key_y = x0 + j * 110, top + 34
            shapes.append(Line(((key_x, key_y - 4), (key_x + 14, key_y - 4)), colour, 1.5))
            shapes.append(Label(key_x + 18, key_y, curve.name, colour=colour))
    rows = max(math.ceil(len(panels) / PANELS_PER_ROW), 1)
    return min(max(len(panels), 1), PANELS_PER_ROW) * _PANEL_W, rows * _PANEL_H, shapes


def _score_axis(x0: float, y0: float, plot_w: float, plot_h: float, chance: float) -> list[Shape]:
    """Grid lines and labels of a 0-1 score axis, and the chance level dashed."""
    shapes: list[Shape] = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 + (1 - tick) * plot_h
        shapes.append(Line(((x0, y), (x0 + plot_w, y)), "#dddddd"))
        shapes.append(Label(x0 - 4, y + 4, f"{tick:g}", "end"))
    y = y0 + (1 - chance) * plot_h
    shapes.append(Line(((x0, y), (x0 + plot_w, y)), dashed=True))
    return shapes


def bar_chart_shapes(
    panels: Sequence[tuple[str, float, Sequence[Sequence[Bar]]]],
    groups: Sequence[str],
    metric: str,
) -> tuple[int, int, list[Shape]]:
    """Panels of grouped bars (score 0-1, ± spread), :data:`PANELS_PER_ROW` to a row.

    Args:
        panels: (title, chance level, one list of bars per group) per panel; the bars of a
            group share their names and colours across groups and panels.
        groups: The group names, under the groups.
        metric: The score's name, for the axis.

    Returns:
        Width, height and the shapes to draw.
    """
    shapes: list[Shape] = []
    plot_w, plot_h = _PANEL_W - _LEFT - _RIGHT, _PANEL_H - _TOP - _BOTTOM
    names = list(dict.fromkeys(b.name for _, _, bars in panels for group in bars for b in group))
    for i, (title, chance, bars) in enumerate(panels):
        row, column = divmod(i, PANELS_PER_ROW)
        top = row * _PANEL_H
        x0, y0 = column * _PANEL_W + _LEFT, top + _TOP
        shapes.append(Label(x0, top + 16, title, bold=True))
        shapes.extend(_score_axis(x0, y0, plot_w, plot_h, chance))
        slot = plot_w / max(len(bars), 1)
        width = slot * 0.8 / max(len(names), 1)
        for g, group in enumerate(bars):
            left = x0 + g * slot + slot * 0.1
            shapes.append(Label(x0 + (g + 0.5) * slot, y0 + plot_h + 16, groups[g], "middle"))
            for bar in group:
                colour = CURVE_COLOURS[names.index(bar.name) % len(CURVE_COLOURS)]
                x = left + (names.index(bar.name) + 0.5) * width
                base, height = y0 + plot_h, y0 + (1 - bar.mean) * plot_h
                shapes.append(Line(((x, base), (x, height)), colour, width * 0.9))
                whisker = (
                    (x, y0 + (1 - min(bar.mean + bar.spread, 1.0)) * plot_h),
                    (x, y0 + (1 - max(bar.mean - bar.spread, 0.0)) * plot_h),
                )
                shapes.append(Line(whisker, "#000000"))
        shapes.append(Label(x0 + plot_w / 2, top + _PANEL_H - 6, metric, "middle"))
        for j, name in enumerate(names):
            key_x, key_y = x0 + j * 80, top + 34
            colour = CURVE_COLOURS[j % len(CURVE_COLOURS)]
            shapes.append(Line(((key_x, key_y - 4), (key_x + 14, key_y - 4)), colour, 6))
            shapes.append(Label(key_x + 18, key_y, name, colour=colour))
    rows = max(math.ceil(len(panels) / PANELS_PER_ROW), 1)
    return min(max(len(panels), 1), PANELS_PER_ROW) * _PANEL_W, rows * _PANEL_H, shapes


def _svg(width: int, height: int, shapes: Sequence[Shape]) -> str:
    body = []
    for shape in shapes:
        if isinstance(shape, Line):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in shape.points)
            dash = ' stroke-dasharray="4 3"' if shape.dashed else ""
            body.append(
                f'<polyline points="{points}" fill="none" stroke="{shape.colour}" '
                f'stroke-width="{shape.width:g}"{dash}/>'
            )
        else:
            weight = ' font-weight="bold"' if shape.bold else ""
            body.append(
                f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" text-anchor="{shape.anchor}" '
                f'fill="{shape.colour}"{weight}>{escape(shape.text)}</text>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" '
        f'fill="#ffffff"/>{"".join(body)}</svg>\n'
    )


def _png(width: int, height: int, shapes: Sequence[Shape], output: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "#ffffff")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    anchors = {"start": "ls", "middle": "ms", "end": "rs"}
    for shape in shapes:
        if isinstance(shape, Line):
            points = list(shape.points)
            if shape.dashed:
                (xa, ya), (xb, yb) = points[0], points[-1]
                steps = max(int(math.hypot(xb - xa, yb - ya) / 7), 1)
                for k in range(steps):
                    t0, t1 = k / steps, (k + 4 / 7) / steps
                    draw.line(
                        [
                            (xa + (xb - xa) * t0, ya + (yb - ya) * t0),
                            (xa + (xb - xa) * t1, ya + (yb - ya) * t1),
                        ],
                        fill=shape.colour,
                        width=round(shape.width),
                    )
            else:
                draw.line(points, fill=shape.colour, width=max(round(shape.width), 1))
        else:
            draw.text(
                (shape.x, shape.y),
                shape.text,
                fill=shape.colour,
                font=font,
                anchor=anchors[shape.anchor],
                stroke_width=1 if shape.bold else 0,
                stroke_fill=shape.colour,
            )
    image.save(output, format="PNG")


def _write(width: int, height: int, shapes: Sequence[Shape], output: Path) -> tuple[Path, Path]:
    svg, png = output.with_suffix(".svg"), output.with_suffix(".png")
    svg.write_text(_svg(width, height, shapes))
    _png(width, height, shapes, png)
    return svg, png


def learning_curves(
    panels: Sequence[tuple[str, float, Sequence[Curve]]], metric: str, output: Path
) -> tuple[Path, Path]:
    """Write the learning curves as ``output`` with the suffixes ``.svg`` and ``.png``."""
    return _write(*learning_curve_shapes(panels, metric), output)


def bar_charts(
    panels: Sequence[tuple[str, float, Sequence[Sequence[Bar]]]],
    groups: Sequence[str],
    metric: str,
    output: Path,
) -> tuple[Path, Path]:
    """Write grouped bar charts (:func:`bar_chart_shapes`) as ``output`` ``.svg`` and ``.png``."""
    return _write(*bar_chart_shapes(panels, groups, metric), output)
