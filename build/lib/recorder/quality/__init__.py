"""quality stage of the recorder pipeline: the analyzer behind every recording's quality report.

`analyze_file` reports duration, delivered fps, frame gaps, frozen/black/silent spans and, where the
sync clip's flash+beep markers are on screen and in the sound, the A/V offset. `tone_level` tells
whether a file carries a given pure tone.
"""

from recorder.quality.audio import AudioReport, tone_level
from recorder.quality.report import QualityReport, analyze_file
from recorder.quality.spans import Span
from recorder.quality.sync import SyncReport
from recorder.quality.video import VideoReport

__all__ = ["AudioReport", "QualityReport", "Span", "SyncReport", "VideoReport", "analyze_file", "tone_level"]
