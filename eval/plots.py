"""Small inline SVG charts for the self-contained report: bars with error bars, histograms.

Hand-written SVG rather than a plotting library: the report must open with no network, the
charts are simple, the output is deterministic (tests compare it), and the project needs no
extra dependency for them. Every label is XML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

_WIDTH, _HEIGHT = 680, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 30, 96
_BAR_COLOUR, _ERROR_COLOUR, _GRID_COLOUR = "#4C78A8", "#222", "#ddd"
_COUNT_FORMAT = "{:.0f}"


def bar_chart(
    items: Sequence[tuple[str, float, tuple[float, float] | None]],
    *,
    title: str,
    y_max: float | None = None,
    value_format: str = "{:.3f}",
) -> str:
    """Vertical bars, one per ``(label, value, (low, high) or None)``, with error bars where given.

    ``y_max`` fixes the axis (1.0 for metrics); otherwise it fits the highest bar or interval.
    """
    if not items:
        return ""
    highest = max([value for _, value, _ in items] + [ci[1] for _, _, ci in items if ci is not None])
    if y_max is not None:
        top = y_max
    elif value_format == _COUNT_FORMAT:
        top = 4 * math.ceil(_nice_ceiling(highest / 4))  # four whole-number steps
    else:
        top = _nice_ceiling(highest)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(items)
    bar_w = min(48.0, slot * 0.6)

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - min(max(value / top, 0.0), 1.0)) if top > 0 else _TOP + plot_h

    parts = [_open(title), *_y_axis(top, y, value_format)]
    for i, (label, value, ci) in enumerate(items):
        centre = _LEFT + slot * (i + 0.5)
        parts.append(
            f'<rect x="{centre - bar_w / 2:.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" '
            f'height="{_TOP + plot_h - y(value):.1f}" fill="{_BAR_COLOUR}">'
            f"<title>{escape(label)}: {escape(value_format.format(value))}"
            + (f" (95% CI {escape(value_format.format(ci[0]))} to {escape(value_format.format(ci[1]))})" if ci else "")
            + "</title></rect>"
        )
        if ci is not None:
            low, high = y(ci[0]), y(ci[1])
            parts.append(
                f'<path d="M{centre:.1f} {low:.1f}V{high:.1f}M{centre - 6:.1f} {low:.1f}H{centre + 6:.1f}'
                f'M{centre - 6:.1f} {high:.1f}H{centre + 6:.1f}" stroke="{_ERROR_COLOUR}" stroke-width="1.5"/>'
            )
        label_y = _TOP + plot_h + 12
        parts.append(
            f'<text x="{centre:.1f}" y="{label_y}" font-size="11" text-anchor="end" '
            f'transform="rotate(-35 {centre:.1f} {label_y})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, title: str, x_label: str, bins: int = 20) -> str:
    """A histogram of ``values`` in ``bins`` equal-width bins; the bars are counts."""
    if not values:
        return ""
    low, high = min(values), max(values)
    width = (high - low) / bins if high > low else 1.0
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    labels = [f"{low + width * i:.3g}" for i in range(bins)]
    return count_bars(list(zip(labels, counts, strict=True)), title=title, x_label=x_label)


def count_bars(items: Sequence[tuple[str, int]], *, title: str, x_label: str) -> str:
    """Bars of counts, one per ``(label, count)``, labels under them and ``x_label`` below."""
    if not items:
        return ""
    chart = bar_chart([(label, float(count), None) for label, count in items], title=title, value_format=_COUNT_FORMAT)
    caption = (
        f'<text x="{_LEFT + (_WIDTH - _LEFT - _RIGHT) / 2:.1f}" y="{_HEIGHT - 8}" font-size="12" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    return chart.removesuffix("</svg>") + caption + "</svg>"


def _open(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" '
        f'height="{_HEIGHT}" role="img" aria-label="{escape(title)}" font-family="sans-serif">'
        f'<text x="{_WIDTH / 2}" y="18" font-size="14" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
    )


def _y_axis(top: float, y: Callable[[float], float], value_format: str) -> list[str]:
    parts = []
    for i in range(5):
        value = top * i / 4
        level = y(value)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{level:.1f}" y2="{level:.1f}" stroke="{_GRID_COLOUR}"/>'
            f'<text x="{_LEFT - 6}" y="{level + 4:.1f}" font-size="11" text-anchor="end">'
            f"{escape(_tick(value, value_format))}</text>"
        )
    return parts


def _tick(value: float, value_format: str) -> str:
    return f"{value:.0f}" if value_format == _COUNT_FORMAT else f"{value:.2f}"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)
