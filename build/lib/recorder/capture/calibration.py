"""The capture path's measured A/V offset, applied to every recording on this machine.

Between Chromium playing a frame and a sample and FFmpeg stamping them lies a small systematic offset
(on the reference machine the audio arrives about 10 ms late). `recorder calibrate` measures it with the
sync clip and stores it; the capture moves the audio by it. Precedence: the RECORDER_AV_OFFSET_MS
setting, then the calibration file, then the default measured on the reference machine
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel

from recorder.config import RecorderSettings

# Mean offset (audio minus video, ms) of the capture path on the reference 2-core machine: +8.6 ms over 12
# recordings of the reference page and +22 ms over one 40-marker calibration (docs/benchmarks.md). Each
# recording also has its own constant error of up to about a frame, from the phase between Chromium's
# compositor and the capture clock, which no constant can remove.
DEFAULT_AV_OFFSET_MS = 10.0


class Calibration(BaseModel):
    av_offset_ms: float
    samples: int
    measured_at: float
    fps: int
    note: str = ""


def av_offset_ms(settings: RecorderSettings) -> float:
    if settings.av_offset_ms is not None:
        return settings.av_offset_ms
    saved = load(settings.calibration_file)
    return saved.av_offset_ms if saved else DEFAULT_AV_OFFSET_MS


def load(path: Path) -> Calibration | None:
    try:
        return Calibration.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def save(path: Path, offset_ms: float, *, samples: int, fps: int, note: str = "") -> Calibration:
    cal = Calibration(av_offset_ms=round(offset_ms, 2), samples=samples, measured_at=time.time(), fps=fps, note=note)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cal.model_dump(), indent=2) + "\n")
    return cal
