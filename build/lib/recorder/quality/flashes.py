"""Video sync markers: a patch of screen that jumps to near white for a moment, again and again.

The sync clip may fill the frame or be one tile of a page whose other tiles move, so flashes are looked
for per cell of a coarse grid. Cells that jump to near white together form the marker group; the group's
mean luminance then gives one onset per flash, at the first frame that shows it.
"""

from __future__ import annotations

import numpy as np

from recorder.quality.spans import runs

JUMP = 80
"""Rise in luma (0..255) between two frames for a cell to count as flashing."""
HIGH = 170
"""Near white: a flashing cell reaches at least this luma."""
MAX_PULSE = 0.5
"""A flash is brief; a patch that turns white and stays white is a scene change, not a marker."""
MIN_FLASHES = 2
SAME_GROUP = 0.5
"""Share of a cell's flashes that must coincide (within a frame) with the seed cell's to join its group."""


def _rises(values: np.ndarray) -> np.ndarray:
    rises = np.zeros(values.shape, dtype=bool)
    rises[1:] = (values[1:] - values[:-1] >= JUMP) & (values[1:] >= HIGH)
    return rises


def marker_cells(cells: np.ndarray) -> np.ndarray:
    """Indices of the cells that flash together most consistently (empty when nothing flashes)."""
    rises = _rises(cells.astype(np.int16))
    counts = rises.sum(axis=0)
    candidates = np.flatnonzero(counts >= MIN_FLASHES)
    if candidates.size == 0:
        return candidates
    events = rises[:, candidates]
    near = events.copy()
    near[1:] |= events[:-1]
    near[:-1] |= events[1:]
    rows = np.flatnonzero(events.any(axis=1))
    shared = events[rows].T.astype(np.float32) @ near[rows].astype(np.float32)
    own = counts[candidates].astype(np.float32)
    similarity = shared / np.maximum(own[:, None], own[None, :])
    seed = int(np.argmax(similarity.sum(axis=1)))
    return candidates[similarity[seed] >= SAME_GROUP]


def detect_flashes(cells: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Onset times (seconds) of the flashes; empty unless at least two are found."""
    none = np.zeros(0, dtype=np.float64)
    if len(pts) < 3:
        return none
    group = marker_cells(cells)
    if group.size == 0:
        return none
    level = cells[:, group].astype(np.float32).mean(axis=1)
    flashing = _rises(cells[:, group].astype(np.int16)).any(axis=1)
    base = float(np.median(level))
    top = float(np.median(level[flashing]))
    if top - base < JUMP:
        return none
    mid = (base + top) / 2
    onsets = []
    for start, stop in runs(level >= mid):
        if start == 0:
            continue  # already bright when the file starts: the onset is unknown
        until = float(pts[stop]) if stop < len(pts) else float("inf")
        if until - float(pts[start]) <= MAX_PULSE:
            onsets.append(float(pts[start]))
    return np.asarray(onsets, dtype=np.float64) if len(onsets) >= MIN_FLASHES else none
