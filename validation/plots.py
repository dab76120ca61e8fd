"""Small server-rendered SVG charts for the dashboard (no plotting library, no JavaScript)."""

from __future__ import annotations

from html import escape

__all__ = ["bar_chart", "interval_chart"]


def bar_chart(
    title: str, labels: list[str], values: list[float], *, percent: bool = False, width: int = 470
) -> str:
    """A horizontal bar chart as an inline SVG string.

    Args:
        title: Chart title.
        labels: One label per bar.
        values: Bar values (counts, or shares 0..1 with ``percent``).
        percent: Show values as percentages of a 0..1 axis.
        width: Width in pixels.
    """
    row, left, pad = 22, 200, 8
    height = pad * 2 + 20 + row * len(labels)
    top = max(values, default=0) if not percent else 1.0
    scale = (width - left - 60) / top if top else 0.0
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="{pad}" y="{pad + 12}" class="chart-title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = pad + 20 + i * row
        shown = f"{100 * value:.0f}%" if percent else f"{value:g}"
        label = label if len(label) <= 30 else label[:29] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{max(value * scale, 0):.1f}" height="{row - 6}"/>'
            f'<text x="{left + value * scale + 4:.1f}" y="{y + 14}">{shown}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def interval_chart(
    title: str, rows: list[tuple[str, float | None, float | None, float | None]]
) -> str:
    """Point estimates with 95 % intervals on a -1..1 axis (agreement coefficients)."""
    width, left, row, pad = 520, 230, 26, 8
    height = pad * 2 + 34 + row * len(rows)
    span = width - left - 20

    def x(v: float) -> float:
        return left + (max(min(v, 1.0), -1.0) + 1.0) / 2.0 * span

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="{pad}" y="{pad + 12}" class="chart-title">{escape(title)}</text>',
    ]
    for tick in (-1.0, 0.0, 0.667, 0.8, 1.0):
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{pad + 20}" '
            f'y2="{height - pad}" class="tick"/><text x="{x(tick):.1f}" y="{height - 1}" '
            f'text-anchor="middle" class="small">{tick:g}</text>'
        )
    for i, (label, value, low, high) in enumerate(rows):
        y = pad + 30 + i * row
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            parts.append(
                f'<text x="{left + 4}" y="{y + 4}" class="small">not enough overlap</text>'
            )
            continue
        if low is not None and high is not None:
            parts.append(
                f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{y}" y2="{y}" class="ci"/>'
            )
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y}" r="4"/>')
    parts.append("</svg>")
    return "".join(parts)
