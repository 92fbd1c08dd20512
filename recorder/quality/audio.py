"""Audio facts from decoded sound: level, silent stretches, and how much of it is one pure tone.

Audio is decoded as mono float32 at 48 kHz on the file's own timeline (sample 0 is t = 0, holes
filled with silence), and reduced second by second to 1 ms measurements, so memory stays small for
recordings of hours while beep onsets keep sub-millisecond resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from recorder.quality.ffmpeg import FFMPEG, RawPipe
from recorder.quality.probe import StreamFacts, probe
from recorder.quality.spans import MAX_LISTED, Span, spans_over

RATE = 48_000
BLOCK = RATE // 1000
"""1 ms of samples: the unit of every stored measurement."""
SEGMENT = RATE
"""Work is done one second at a time; the spectrum has 1 Hz bins."""
SILENCE_DBFS = -50.0
SILENCE_WINDOW = 10
"""Silence is judged on 10 ms windows (RMS)."""
MIN_SPAN = 0.5


@dataclass
class AudioSignals:
    samples: int
    energy: np.ndarray  # float32 per 1 ms block: sum of squared samples
    tone_hz: float | None
    tone: np.ndarray  # complex64 per 1 ms block: sum of x[n] * exp(-2j*pi*tone_hz*n/RATE); empty without a tone
    spectrum: np.ndarray  # float64 power per 1 Hz bin, summed over Hann-windowed seconds
    peak: float = 0.0  # largest absolute sample of the mono mix

    @property
    def duration(self) -> float:
        return self.samples / RATE


class _Accumulator:
    """Reduces a stream of samples to AudioSignals without keeping the samples."""

    def __init__(self, tone_hz: float | None) -> None:
        self.tone_hz = tone_hz
        self._pending = np.zeros(0, dtype=np.float32)
        self._done = 0
        self._energy: list[np.ndarray] = []
        self._tone: list[np.ndarray] = []
        self._spectrum = np.zeros(SEGMENT // 2 + 1, dtype=np.float64)
        self._peak = 0.0
        self._window = np.hanning(SEGMENT).astype(np.float32)
        if tone_hz:
            self._omega = 2 * np.pi * tone_hz / RATE
            self._phasor = np.exp(-1j * self._omega * np.arange(SEGMENT)).astype(np.complex64)

    def feed(self, samples: np.ndarray) -> None:
        pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        whole = len(pending) // SEGMENT * SEGMENT
        for start in range(0, whole, SEGMENT):
            self._segment(pending[start : start + SEGMENT])
        self._pending = pending[whole:].copy()

    def _segment(self, segment: np.ndarray) -> None:
        count = len(segment)
        padded = np.zeros(SEGMENT, dtype=np.float32)
        padded[:count] = segment
        blocks = -(-count // BLOCK)
        self._energy.append(np.square(padded[: blocks * BLOCK]).reshape(blocks, BLOCK).sum(axis=1))
        if self.tone_hz:
            start_phase = np.exp(-1j * ((self._omega * self._done) % (2 * np.pi)))
            mixed = padded[: blocks * BLOCK] * self._phasor[: blocks * BLOCK] * np.complex64(start_phase)
            self._tone.append(mixed.reshape(blocks, BLOCK).sum(axis=1).astype(np.complex64))
        self._spectrum += np.square(np.abs(np.fft.rfft(padded * self._window)))
        if count:
            self._peak = max(self._peak, float(np.abs(segment).max()))
        self._done += count

    def finish(self) -> AudioSignals:
        if self._pending.size:
            self._segment(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        return AudioSignals(
            samples=self._done,
            energy=np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32),
            tone_hz=self.tone_hz,
            tone=np.concatenate(self._tone) if self._tone else np.zeros(0, np.complex64),
            spectrum=self._spectrum,
            peak=self._peak,
        )


def decode_audio(path: Path, stream: StreamFacts, tone_hz: float | None) -> AudioSignals:
    """Decode the stream to mono 48 kHz on the file's timeline and reduce it on the fly."""
    args = [
        FFMPEG, "-hide_banner", "-nostats", "-loglevel", "error", "-i", str(path),
        "-map", f"0:{stream.index}", "-af", "aresample=async=1:first_pts=0",
        "-ac", "1", "-ar", str(RATE), "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    accumulator = _Accumulator(tone_hz)
    with RawPipe(args, path) as pipe:
        for block in pipe.chunks(SEGMENT * 4):
            usable = len(block) // 4 * 4
            accumulator.feed(np.frombuffer(block[:usable], dtype=np.float32))
        pipe.finish()
    return accumulator.finish()


def band_share(spectrum: np.ndarray, hz: float) -> float:
    """Share of the energy (DC excluded) within a narrow band around `hz`: ~1 for a pure tone, ~0 without it.

    The band (±25 Hz, wider for high tones) holds nearly all of a 100 ms beep's energy."""
    power = spectrum[1:]
    total = float(power.sum())
    if total <= 0:
        return 0.0
    half_width = max(25.0, 0.03 * hz)
    freqs = np.arange(1, len(spectrum), dtype=np.float64) * (RATE / SEGMENT)
    return float(power[np.abs(freqs - hz) <= half_width].sum() / total)


def tone_level(path: Path, hz: float) -> float:
    """Relative energy (0..1) of a pure tone at `hz` in the file's first audio stream; 0 without audio."""
    facts = probe(Path(path))
    if facts.audio is None:
        return 0.0
    return band_share(decode_audio(Path(path), facts.audio, None).spectrum, hz)


class AudioReport(BaseModel):
    codec: str | None
    sample_rate: int | None
    channels: int | None
    duration: float | None
    rms_dbfs: float | None
    peak_dbfs: float | None = None  # the loudest sample (of the mono mix); null without samples
    silent_total: float
    silent: list[Span]
    tone_hz: float
    tone_level: float


def _dbfs(mean_square: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(mean_square, 1e-12))


def silent_spans(signals: AudioSignals) -> list[Span]:
    """Stretches of at least 0.5 s whose 10 ms RMS stays below -50 dBFS."""
    windows = len(signals.energy) // SILENCE_WINDOW
    if windows == 0:
        return []
    energy = signals.energy[: windows * SILENCE_WINDOW].astype(np.float64)
    mean_square = energy.reshape(windows, SILENCE_WINDOW).sum(axis=1) / (SILENCE_WINDOW * BLOCK)
    quiet = _dbfs(mean_square) < SILENCE_DBFS
    times = np.arange(windows) * (SILENCE_WINDOW / 1000)
    return spans_over(quiet, times, signals.duration, MIN_SPAN)


def analyze_audio(signals: AudioSignals, stream: StreamFacts, tone_hz: float) -> AudioReport:
    silent = silent_spans(signals)
    rms = float(_dbfs(np.asarray(signals.energy.sum(dtype=np.float64) / signals.samples))) if signals.samples else None
    peak = float(_dbfs(np.asarray(signals.peak**2))) if signals.samples else None
    return AudioReport(
        codec=stream.codec,
        sample_rate=stream.sample_rate,
        channels=stream.channels,
        duration=round(stream.duration if stream.duration else signals.duration, 3),
        rms_dbfs=round(rms, 1) if rms is not None else None,
        peak_dbfs=round(peak, 1) if peak is not None else None,
        silent_total=round(sum(s.length for s in silent), 3),
        silent=silent[:MAX_LISTED],
        tone_hz=tone_hz,
        tone_level=round(band_share(signals.spectrum, tone_hz), 4),
    )
