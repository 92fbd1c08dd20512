"""What happened during a recording, on the media clock: `timeline.json`, written by the recorder beside
rec.json and read by the orchestrator's replay page.

Every time `t` is seconds from the first frame of the file, so an event lines up with the picture shown at
that moment: a player's `currentTime`. Things before the first frame (loading, a join script, a waiting
room) have negative times. A pause is cut out of the file, so its span is empty on the media clock
(`start == end`, the cut) and carries how long it lasted on the wall clock.

The file is bounded: about 1 MB per recorded hour for ordinary pages, and the caps below (with the
recorder's per-source budgets and text clipping) hold a hostile page to a few megabytes. Events beyond
their cap are counted in `dropped`, never silently lost, and series are downsampled (adjacent points
averaged, the step doubled), never cut off.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.protocol import TIMELINE_NAME

__all__ = ["TIMELINE_NAME", "Series", "Timeline", "TimelineEvent", "TimelineSpan", "TimelineSummary", "Track"]

TIMELINE_VERSION = 1

# Bounds that keep a timeline near or under 1 MB for an hour.
MAX_EVENTS = 3000  # all kinds together; then counted in `dropped`
MAX_EVENTS_PER_KIND = 500  # e.g. a page that logs an error every frame cannot fill the timeline alone
MAX_SPANS = 1000
MAX_SERIES_POINTS = 600  # per series: an hour at a 6 s step, a minute at 1 s
MAX_TRACKS = 32  # inbound WebRTC tracks followed; later ones are counted in `dropped`
MAX_TEXT = 300  # characters of a message, a URL or a console line

Source = Literal["capture", "page", "webrtc", "analyzer", "control"]
Level = Literal["info", "warning", "error"]

# Span kinds the replay page colours. `frozen`, `black`, `silent` and `gap` come from the analyzer (the
# file itself); `paused` and `waiting` from the recorder's control; `network` from WebRTC inbound stats
# (a track frozen, or losing more than LOSS_THRESHOLD of its packets).
SpanKind = Literal["frozen", "black", "silent", "gap", "paused", "waiting", "network"]
PROBLEM_SPANS: frozenset[str] = frozenset({"frozen", "black", "silent", "gap", "network"})
LOSS_THRESHOLD = 0.05
# A track with fewer packets than this says nothing about loss over the recording.
MIN_LOSS_PACKETS = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimelineEvent(_Model):
    """One moment. `kind` names what happened, by source:

    - capture: `behind` (the capture fell behind real time), `dropped_frames`, `repeated_frames`;
    - page: `console` (errors and warnings), `exception` (uncaught), `request_failed`, `request_blocked`
      (the egress guard refused it), `navigation`, `dialog`, `crash`, `reload`, `signal` (data.name:
      START_RECORDING or END_RECORDING), `action` (a join-script step, data.index/verb);
    - webrtc: `track_added`, `track_removed`, `freeze_started`, `freeze_ended`, `loss_high`, `loss_recovered`;
    - control: `waiting`, `recording`, `pause`, `resume`, `stop` (data.reason)."""

    t: float
    source: Source
    kind: str
    level: Level = "info"
    message: str = Field(max_length=MAX_TEXT)
    track: str | None = Field(default=None, description="the WebRTC track it concerns, if any")
    data: dict[str, Any] = Field(default_factory=dict)


class TimelineSpan(_Model):
    start: float
    end: float
    kind: SpanKind
    source: Source
    message: str = Field(default="", max_length=MAX_TEXT)
    track: str | None = None
    wall_seconds: float | None = Field(default=None, description="a pause's length on the wall clock")


class Series(_Model):
    """Points on a regular grid: value i is the mean over [t0 + i*step, t0 + (i+1)*step); None where nothing
    was sampled."""

    name: str  # e.g. capture.fps, capture.speed, webrtc.loss, webrtc.fps, webrtc.jitter
    unit: str
    track: str | None = None
    t0: float
    step: float
    values: list[float | None] = Field(max_length=MAX_SERIES_POINTS)


class Track(_Model):
    """An inbound WebRTC track as `getStats()` showed it."""

    id: str
    kind: Literal["audio", "video"]
    first_seen: float
    last_seen: float
    freeze_count: int = 0
    freeze_seconds: float = 0.0
    packets_lost: int = 0
    packets_received: int = 0
    worst_loss: float = Field(default=0.0, description="the worst share of packets lost over one sample interval")
    concealed_seconds: float = Field(default=0.0, description="audio: seconds of concealed (made-up) samples")


class TimelineSummary(_Model):
    """What rec.json and the recording's `quality.timeline` carry: enough to sort and filter recordings."""

    worst_inbound_loss: float | None = Field(
        description="0-1: the worst share of packets lost over one stats interval, any inbound track; null without"
        " WebRTC"
    )
    inbound_loss: float | None = Field(
        default=None,
        description="0-1: the share of its packets the worst inbound track lost over the whole recording"
        " (lost / (lost + received), tracks of at least MIN_LOSS_PACKETS); null without WebRTC",
    )
    freeze_seconds: dict[str, float] = Field(default_factory=dict, description="per inbound video track")
    errors: int = Field(description="page errors: console errors, uncaught exceptions, failed requests, crashes")
    warnings: int
    problems: int = Field(description="problem spans (frozen, black, silent, gap, network) plus errors")


class Timeline(_Model):
    version: int = TIMELINE_VERSION
    recording_id: str | None = None
    attempt: int | None = None
    duration: float | None = Field(description="media seconds, as the file has them")
    first_frame_at: float | None = Field(description="wall-clock time (Unix seconds) of media time 0")
    events: list[TimelineEvent] = Field(default_factory=list)
    spans: list[TimelineSpan] = Field(default_factory=list)
    series: list[Series] = Field(default_factory=list)
    tracks: list[Track] = Field(default_factory=list)
    summary: TimelineSummary
    dropped: dict[str, int] = Field(default_factory=dict, description="events over their cap, by kind")
