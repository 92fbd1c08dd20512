"""Audio sync markers: onsets of short beeps at one frequency, with sub-millisecond precision.

A narrow-band detector: the audio is mixed down by the beep frequency and averaged over a centred
10 ms window every 1 ms (a sliding Goertzel). For a beep starting at t0 the envelope ramps linearly
across the window and crosses half its plateau exactly at t0, so the onset is that crossing,
interpolated between hops. A rise only counts when it stands well above the local noise floor and the
tone carries most of the sound at that moment, which rejects other tones and broadband clicks.
"""

from __future__ import annotations

import numpy as np

from recorder.quality.audio import BLOCK, AudioSignals

WINDOW = 10
"""Blocks (ms) averaged per envelope value."""
MIN_AMPLITUDE = 0.01
"""A beep quieter than -40 dBFS (peak) is not a marker."""
ABOVE_FLOOR = 10.0
"""The plateau must be 20 dB above the envelope just before it."""
MIN_PURITY = 0.3
"""Share of the sound's power that must be the tone during the beep."""
PLATEAU_MS = 30
FLOOR_MS = (200, 20)
"""The local noise floor is the median envelope from 200 ms to 20 ms before the rise."""


def tone_envelope(signals: AudioSignals) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, amplitude of the tone, tone power / total power), one value per ms."""
    if signals.tone.size < WINDOW:
        empty = np.zeros(0)
        return empty, empty, empty
    box = np.ones(WINDOW, dtype=np.float32)
    span = WINDOW * BLOCK
    amplitude = (2 / span) * np.abs(np.convolve(signals.tone, box.astype(np.complex64), mode="valid"))
    power = np.convolve(signals.energy, box, mode="valid") / span
    purity = np.divide(np.square(amplitude) / 2, power, out=np.zeros_like(power), where=power > 0)
    times = (np.arange(len(amplitude)) + WINDOW / 2) / 1000
    return times, amplitude.astype(np.float32), purity.astype(np.float32)


def detect_beeps(signals: AudioSignals) -> np.ndarray:
    """Onset times (seconds) of the beeps at the signals' tone frequency."""
    times, envelope, purity = tone_envelope(signals)
    none = np.zeros(0, dtype=np.float64)
    if envelope.size == 0:
        return none
    high = max(0.5 * float(np.percentile(envelope, 99.5)), MIN_AMPLITUDE)
    low = 0.5 * high
    above = envelope >= high
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    onsets: list[float] = []
    rearm = 0
    for rise in rises.tolist():
        if rise < rearm:
            continue
        falls = np.flatnonzero(envelope[rise:] < low)
        rearm = rise + (int(falls[0]) if falls.size else len(envelope))
        onset = _onset(times, envelope, purity, rise)
        if onset is not None:
            onsets.append(onset)
    return np.asarray(onsets, dtype=np.float64)


def _onset(times: np.ndarray, envelope: np.ndarray, purity: np.ndarray, rise: int) -> float | None:
    plateau = float(np.percentile(envelope[rise : rise + PLATEAU_MS], 75))
    before = envelope[max(0, rise - FLOOR_MS[0]) : max(0, rise - FLOOR_MS[1])]
    floor = float(np.median(before)) if before.size else 0.0
    if plateau < MIN_AMPLITUDE or plateau < ABOVE_FLOOR * floor:
        return None
    if float(np.median(purity[rise : rise + PLATEAU_MS])) < MIN_PURITY:
        return None
    half = floor + 0.5 * (plateau - floor)
    index = rise  # move to the first value at or above half the plateau, whichever side it is
    while index < rise + PLATEAU_MS and index + 1 < len(envelope) and envelope[index] < half:
        index += 1
    while index > 0 and envelope[index - 1] >= half and rise - index < WINDOW * 3:
        index -= 1
    if index == 0:
        return None  # already sounding when the file starts
    lo, hi = float(envelope[index - 1]), float(envelope[index])
    fraction = (half - lo) / (hi - lo) if hi > lo else 0.0
    return float(times[index - 1] + min(max(fraction, 0.0), 1.0) / 1000)
