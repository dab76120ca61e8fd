"""The shape charts: bars stand where their scores say, both renderers draw them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from trainer.plots import Bar, Label, Line, bar_chart_shapes, bar_charts


def _bars(shapes: list) -> list[Line]:
    return [
        s
        for s in shapes
        if isinstance(s, Line) and s.width > 2 and s.points[0][1] != s.points[1][1]
    ]


def test_bars_are_as_tall_as_their_scores_and_keep_one_colour_per_name():
    panels = [
        ("water", 0.5, [[Bar("s2", 0.9, 0.02), Bar("s1", 0.45, 0.1)]]),
        ("crop", 0.5, [[Bar("s2", 0.6, 0.0), Bar("s1", 0.3, 0.0)]]),
    ]
    width, height, shapes = bar_chart_shapes(panels, ["logistic"], "balanced accuracy")
    assert width > 0 and height > 0
    bars = _bars(shapes)
    assert len(bars) == 4
    heights = [s.points[0][1] - s.points[1][1] for s in bars]
    full = heights[0] / 0.9  # the plot height of a score of 1
    for got, want in zip(heights, (0.9, 0.45, 0.6, 0.3), strict=True):
        assert abs(got - want * full) < 1e-6
    assert bars[0].colour == bars[2].colour != bars[1].colour == bars[3].colour
    texts = {s.text for s in shapes if isinstance(s, Label)}
    assert {"water", "crop", "s2", "s1", "logistic"} <= texts


def test_bar_charts_write_an_svg_and_a_png(tmp_path: Path):
    panels = [("water", 0.5, [[Bar("s2", 0.9, 0.02)]])]
    svg, png = bar_charts(panels, ["logistic"], "balanced accuracy", tmp_path / "bars")
    assert svg.read_text().startswith("<svg") and "water" in svg.read_text()
    image = Image.open(png)
    assert image.format == "PNG"
    # The bar is drawn: some pixels carry the first colour (#1f6feb).
    assert (0x1F, 0x6F, 0xEB) in {c for _, c in image.convert("RGB").getcolors(1 << 20)}
