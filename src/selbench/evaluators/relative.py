"""Relative performance and ARP (``arp_v1``).

Relative performance of a cell in a protocol column = its value / the full-data reference's × 100 (reference /
value for a lower-is-better column). ARP = the mean over the protocol's columns; a cell missing any of them is
N/A (None), never a partial mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ARP_VERSION = "arp_v1"
OSC_VERSION = "osc_v1"


def relative_performance(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not math.isfinite(value) or not math.isfinite(reference):
        return None
    if reference == 0:
        return None
    return value / reference * 100.0


def arp(relative: Mapping[str, float | None]) -> float | None:
    """The mean of a cell's per-column relative performances; None when any column's is missing."""
    rel = list(relative.values())
    if not rel or any(r is None for r in rel):
        return None
    return sum(rel) / len(rel)  # type: ignore[arg-type]


def osc(selection_s: float | None, subset_finetune_s: float | None, full_finetune_s: float | None) -> float | None:
    """(selection + subset fine-tuning) / full fine-tuning, on the same device kind (``osc_v1``)."""
    if None in (selection_s, subset_finetune_s, full_finetune_s) or not full_finetune_s:
        return None
    return (selection_s + subset_finetune_s) / full_finetune_s  # type: ignore[operator]
