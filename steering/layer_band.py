"""The Chat tab's layer sliders without a UI: a band of consecutive layers as (first layer, width), to and from the
layer spec that steering takes. A spec that is not one band (e.g. "3,5,9") has no slider form; the text box rules."""

from __future__ import annotations

from .settings import format_layers, parse_layers


def band_of(layers: str | None, num_layers: int) -> tuple[int, int] | None:
    """(first layer, width) when `layers` names one band of consecutive layers, else None."""
    try:
        chosen = parse_layers(layers, num_layers) if str(layers or "").strip() else []
    except ValueError:
        return None
    if not chosen or chosen != list(range(chosen[0], chosen[-1] + 1)):
        return None
    return chosen[0], len(chosen)


def band_spec(first: float, width: float, last: int) -> str:
    """The layer spec of the band starting at `first`, `width` layers wide, cut at layer `last`."""
    first, width = int(first), max(int(width), 1)
    return format_layers(range(first, min(first + width - 1, last) + 1))
