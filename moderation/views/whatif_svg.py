"""The what-if plot as a small inline SVG, drawn on the server: no script, no image file, works in any browser.

Two panels share the threshold axis (0 to 1): precision and recall (holdout solid, past decisions dashed), and
volume per day (queue as a function of the review threshold, auto-actions as a function of the auto-action
threshold). Both thresholds in force are marked with vertical lines.
"""

from django.utils.html import escape

WIDTH, HEIGHT, PAD = 640, 200, 40
COLOURS = {"precision": "#1f77b4", "recall": "#d62728", "queue": "#2ca02c", "auto": "#9467bd"}


def _x(threshold: float) -> float:
    return PAD + threshold * (WIDTH - 2 * PAD)


def _y(value: float, top: float) -> float:
    return HEIGHT - PAD - (value / top if top else 0.0) * (HEIGHT - 2 * PAD)


def _path(grid, values, top: float, colour: str, dashed: bool, name: str) -> str:
    points = [f"{_x(t):.1f},{_y(v, top):.1f}" for t, v in zip(grid, values, strict=True) if v is not None]
    if len(points) < 2:
        return ""
    dash = ' stroke-dasharray="5,3"' if dashed else ""
    return (
        f'<polyline class="curve {name}" fill="none" stroke="{colour}" stroke-width="1.6"{dash} '
        f'points="{" ".join(points)}"><title>{escape(name)}</title></polyline>'
    )


def _frame(title: str, top: float, unit: str, review: float, auto: float | None) -> list[str]:
    parts = [
        f'<text x="{PAD}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#555"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#555"/>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{top:g}{unit}</text>',
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="10" text-anchor="end">0</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<text x="{_x(tick):.1f}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">{tick:g}</text>'
        )
    marks = [("review", review, "#ff7f0e")] + ([("auto-action", auto, "#000")] if auto is not None else [])
    for name, value, colour in marks:
        parts.append(
            f'<line class="mark {name}" x1="{_x(value):.1f}" y1="{PAD}" x2="{_x(value):.1f}" y2="{HEIGHT - PAD}" '
            f'stroke="{colour}" stroke-dasharray="2,2"><title>{name} threshold {value:.4f}</title></line>'
            f'<text x="{_x(value) + 3:.1f}" y="{PAD + 10}" font-size="10" fill="{colour}">{name} {value:.2f}</text>'
        )
    return parts


def _legend(items: list[tuple[str, str, bool]]) -> str:
    parts, x = [], PAD
    for name, colour, dashed in items:
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        parts.append(f'<line x1="{x}" y1="{HEIGHT - 8}" x2="{x + 18}" y2="{HEIGHT - 8}" stroke="{colour}"{dash}/>')
        parts.append(f'<text x="{x + 22}" y="{HEIGHT - 4}" font-size="10">{escape(name)}</text>')
        x += 30 + 6 * len(name)
    return "".join(parts)


def render(curves: dict) -> str:
    """Both panels of one label's what-if curves as one SVG element (safe to mark safe: every text is escaped)."""
    grid, review, auto = curves["grid"], curves["review"], curves["auto"]
    rates = _frame(f"Precision and recall of {curves['label']} ({curves['version']})", 1.0, "", review, auto)
    rates += [
        _path(grid, curves["holdout_precision"], 1.0, COLOURS["precision"], False, "holdout precision"),
        _path(grid, curves["holdout_recall"], 1.0, COLOURS["recall"], False, "holdout recall"),
        _path(grid, curves["decision_precision"], 1.0, COLOURS["precision"], True, "decisions precision"),
        _path(grid, curves["decision_recall"], 1.0, COLOURS["recall"], True, "decisions recall"),
        _legend(
            [
                ("holdout precision", COLOURS["precision"], False),
                ("holdout recall", COLOURS["recall"], False),
                ("decisions precision", COLOURS["precision"], True),
                ("decisions recall", COLOURS["recall"], True),
            ]
        ),
    ]
    top = max([1.0, *curves["queue_per_day"], *curves["auto_per_day"]])
    volume = _frame(f"Images per day (last {curves['days']} days)", round(top, 1), "/day", review, auto)
    volume += [
        _path(grid, curves["queue_per_day"], top, COLOURS["queue"], False, "queue per day"),
        _path(grid, curves["auto_per_day"], top, COLOURS["auto"], False, "auto-actions per day"),
        _legend([("queue per day (review threshold)", COLOURS["queue"], False),
                 ("auto-actions per day (auto-action threshold)", COLOURS["auto"], False)]),
    ]  # fmt: skip
    label = escape(curves["label"])
    return (
        f'<svg class="whatif" data-label="{label}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{2 * HEIGHT}" viewBox="0 0 {WIDTH} {2 * HEIGHT}" role="img" '
        f'aria-label="What-if curves for {label}">'
        f'<g>{"".join(rates)}</g><g transform="translate(0,{HEIGHT})">{"".join(volume)}</g></svg>'
    )
