"""Search windows as ``--set`` arguments that ``adamtune tune`` accepts as they are."""

from __future__ import annotations

from adamtune.config import shortest_g
from adamtune.space import Dimension, default_scale, parse_override

# A printed bound may move by at most this much of its window's width on the window's own scale.
_TOLERANCE = 0.01


def short_number(dim: Dimension, x: float) -> str:
    """The shortest ``%g`` text for ``x`` that stays within 1% of ``dim``'s width of it (scaled).

    Betas need more digits near 1 (0.99993, not 1), a log-scale lr fewer (0.001).
    """
    def close(y: float) -> bool:
        if dim.scale == "log1m" and y >= 1 or dim.scale == "log" and y <= 0:
            return False
        return abs(dim.to_unit(y) - dim.to_unit(x)) <= _TOLERANCE

    return shortest_g(x, close, first=2)


def set_argument(dim: Dimension) -> str:
    """``NAME=LOW:HIGH`` for ``dim``, with ``:SCALE`` only where it is not the name's default.

    The text goes through ``parse_override`` before it is returned, so what is printed is what
    ``adamtune tune --set`` will accept.
    """
    low, high = short_number(dim, dim.low), short_number(dim, dim.high)
    text = f"{dim.name}={low}:{high}"
    if dim.scale != default_scale(dim.name):
        text = f"{text}:{dim.scale}"
    parse_override(text)
    return text


def window_text(dim: Dimension) -> str:
    """``"1e-06..0.0001"``: a window as findings print it."""
    return f"{short_number(dim, dim.low)}..{short_number(dim, dim.high)}"

