"""Merging swapped faces back into frames: colour transfer (more stages to come)."""

from dflray.merge.color import CT_MODES, color_transfer

__all__ = ["CT_MODES", "color_transfer"]
