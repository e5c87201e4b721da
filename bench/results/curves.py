"""Line charts as PNG with Pillow alone: a run folder's ``curves.png`` (training loss and zero-shot accuracy per
epoch, side by side).

A few lines with markers, ticks, a grid and a legend do not need matplotlib, whose import and layout cost a fresh
process most of a second, more than a smoke run trains; these draw in a few hundredths of a second. Drawn at twice
the size and halved, so lines are smooth without an antialiasing renderer. ``bench report``'s figures, which
compare many runs, stay matplotlib's.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

SCALE = 2
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))  # matplotlib's first five
GRID = (231, 231, 231)
TEXT = (0, 0, 0)


@dataclass
class Series:
    label: str
    x: list
    y: list
    color: tuple | None = None  # default: the next of COLORS


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list = field(default_factory=list)
    ylim: tuple | None = None  # default: the data's range with a margin
    legend: bool = False
    integer_x: bool = False  # ticks on whole numbers only (epochs)


def nice_ticks(lo: float, hi: float, most: int = 7, integer: bool = False) -> list[float]:
    """Round values inside ``[lo, hi]``, 1, 2, 2.5 or 5 times a power of ten apart, at most ``most`` of them."""
    span = hi - lo
    if not span > 0:
        return [lo]
    base = 10.0 ** math.floor(math.log10(span / most))
    for mult in (1, 2, 2.5, 5, 10, 20):
        step = base * mult
        if integer and step < 1:
            continue
        if math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1 <= most:
            break
    first = math.ceil(lo / step - 1e-9)
    decimals = max(0, 1 - math.floor(math.log10(step)))  # enough for 2.5 times a power of ten
    return [round((first + i) * step, decimals) + 0.0  # + 0.0: no -0.0
            for i in range(int(math.floor(hi / step + 1e-9)) - first + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    """``value`` with as many decimals as the tick step needs (0.25 -> 2, 0.2 -> 1, 5 -> 0)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(abs(step), 1)), 6)
    return f"{value:.{decimals}f}"


def _font(size: int):
    return ImageFont.load_default(size * SCALE)  # FreeType's rendering of Pillow's own font (a bitmap font without it)


class _Canvas:
    """An image drawn in final-size pixel coordinates, at ``SCALE`` times the size."""

    def __init__(self, width: int, height: int):
        self.image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
        self.draw = ImageDraw.Draw(self.image)

    def line(self, points, color, width: float = 1.0):
        self.draw.line([(x * SCALE, y * SCALE) for x, y in points], fill=color, width=max(1, round(width * SCALE)),
                       joint="curve")

    def rect(self, box, outline=None, fill=None, width: float = 1.0):
        self.draw.rectangle([c * SCALE for c in box], outline=outline, fill=fill, width=max(1, round(width * SCALE)))

    def dot(self, x, y, color, radius: float = 3.5):
        r = radius * SCALE
        self.draw.ellipse([x * SCALE - r, y * SCALE - r, x * SCALE + r, y * SCALE + r], fill=color)

    def size(self, text: str, font) -> tuple[float, float]:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=font)
        return (right - left) / SCALE, (bottom - top) / SCALE

    def text(self, x, y, text: str, font, anchor: str = "la", color=TEXT):
        """``anchor``: horizontal l/m/r and vertical a (top)/m/b of the text's box at ``(x, y)``, as Pillow names
        them (its own anchors work for TrueType fonts only)."""
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=font)
        w, h = right - left, bottom - top
        px = x * SCALE - {"l": 0, "m": w / 2, "r": w}[anchor[0]] - left
        py = y * SCALE - {"a": 0, "m": h / 2, "b": h}[anchor[1]] - top
        self.draw.text((px, py), text, font=font, fill=color)

    def vertical_text(self, x, y, text: str, font, color=TEXT):
        """Text turned a quarter left (a y axis label), centred on ``(x, y)``."""
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=font)
        mask = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255)
        mask = mask.rotate(90, expand=True)
        self.image.paste(color, (round(x * SCALE - mask.width / 2), round(y * SCALE - mask.height / 2)), mask)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.reduce(SCALE).save(buffer, format="png")
        return buffer.getvalue()


def _finite(series: Series) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zip(series.x, series.y)
            if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]


def _limits(values: list[float], margin: float = 0.05) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = (hi - lo) * margin if hi > lo else max(abs(lo) * margin, 0.5)
    return lo - pad, hi + pad


def _draw_panel(canvas: _Canvas, panel: Panel, box: tuple, fonts: dict):
    left, top, right, bottom = box
    points = [_finite(s) for s in panel.series]
    x_lo, x_hi = _limits([x for p in points for x, _ in p])
    y_lo, y_hi = panel.ylim if panel.ylim is not None else _limits([y for p in points for _, y in p])

    def px(x):
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y):
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    x_ticks = nice_ticks(x_lo, x_hi, integer=panel.integer_x)
    y_ticks = nice_ticks(y_lo, y_hi, most=6)
    for x in x_ticks:
        canvas.line([(px(x), top), (px(x), bottom)], GRID, 0.8)
        canvas.line([(px(x), bottom), (px(x), bottom + 3.5)], TEXT, 0.8)
        canvas.text(px(x), bottom + 6, tick_label(x, x_ticks), fonts["tick"], "ma")
    widest = 0.0
    for y in y_ticks:
        canvas.line([(left, py(y)), (right, py(y))], GRID, 0.8)
        canvas.line([(left - 3.5, py(y)), (left, py(y))], TEXT, 0.8)
        label = tick_label(y, y_ticks)
        widest = max(widest, canvas.size(label, fonts["tick"])[0])
        canvas.text(left - 6, py(y), label, fonts["tick"], "rm")
    canvas.rect((left, top, right, bottom), outline=TEXT, width=0.8)
    for i, (series, pts) in enumerate(zip(panel.series, points)):
        color = series.color or COLORS[i % len(COLORS)]
        if len(pts) > 1:
            canvas.line([(px(x), py(y)) for x, y in pts], color, 1.8)
        for x, y in pts:
            canvas.dot(px(x), py(y), color)
    canvas.text((left + right) / 2, top - 8, panel.title, fonts["title"], "mb")
    canvas.text((left + right) / 2, bottom + 24, panel.xlabel, fonts["label"], "ma")
    canvas.vertical_text(left - 16 - widest, (top + bottom) / 2, panel.ylabel, fonts["label"])
    if panel.legend:
        _legend(canvas, panel.series, (right, bottom), fonts["tick"])


def _legend(canvas: _Canvas, series: list, corner: tuple, font):
    """Labels with their line and marker, boxed in the lower right corner."""
    right, bottom = corner
    rows = [(s.label, s.color or COLORS[i % len(COLORS)]) for i, s in enumerate(series)]
    row_height, sample = 17, 26
    width = 8 + sample + 8 + max(canvas.size(label, font)[0] for label, _ in rows) + 8
    height = 6 + row_height * len(rows) + 2
    left, top = right - 6 - width, bottom - 6 - height
    canvas.rect((left, top, left + width, top + height), outline=(204, 204, 204), fill="white", width=0.8)
    for i, (label, color) in enumerate(rows):
        y = top + 6 + row_height * i + row_height / 2
        canvas.line([(left + 8, y), (left + 8 + sample, y)], color, 1.5)
        canvas.dot(left + 8 + sample / 2, y, color)
        canvas.text(left + 8 + sample + 8, y, label, font, "lm")


def line_charts(panels: list[Panel], title: str = "", width: int = 1100, height: int = 418) -> bytes:
    """``panels`` side by side under ``title``, as PNG bytes."""
    canvas = _Canvas(width, height)
    fonts = {"title": _font(14), "label": _font(12), "tick": _font(11), "suptitle": _font(15)}
    if title:
        canvas.text(width / 2, 10, title, fonts["suptitle"], "ma")
    left_margin, gap, right_margin, top, bottom = 75, 85, 30, 75, height - 62
    panel_width = (width - left_margin - right_margin - gap * (len(panels) - 1)) / max(len(panels), 1)
    for i, panel in enumerate(panels):
        left = left_margin + i * (panel_width + gap)
        _draw_panel(canvas, panel, (left, top, left + panel_width, bottom), fonts)
    return canvas.png()
