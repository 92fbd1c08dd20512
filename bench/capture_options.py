"""Capture settings a benchmark run can override, so settings can be compared on the same page and machine.

The encoder settings map onto the recorder's own settings (RECORDER_PRESET, RECORDER_CRF,
RECORDER_ENCODER_THREADS). `xvfb_glx` puts back the GL extension the recorder's Xvfb leaves out
(recorder.source.display.EXTENSIONS_OFF). `grab_pixel_format` is how the paced grab hands pictures to
FFmpeg (recorder.capture.grabber.PIXEL_FORMAT: I420 converted by libyuv, or BGR0 for FFmpeg to convert).
Chromium's flags come as a named set, adjusted with --chromium-add/--chromium-drop:

- `ours`: the recorder's flags as shipped (recorder.source.browser.CHROMIUM_ARGS);
- `naive`: only what a faithful capture needs (kiosk at 0,0, autoplay, media prompts accepted), every other
  Chromium default left alone: the baseline the shipped set is measured against.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from recorder.source.browser import CHROMIUM_ARGS

FLAG_SETS: dict[str, list[str]] = {
    "ours": list(CHROMIUM_ARGS),
    "naive": [
        "--no-first-run",
        "--no-default-browser-check",
        "--kiosk",
        "--start-fullscreen",
        "--window-position=0,0",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
    ],
}


@dataclass(frozen=True)
class CaptureOptions:
    width: int = 1280
    height: int = 720
    fps: int = 30
    preset: str = "ultrafast"
    crf: int = 26
    threads: int = 1
    x264_params: str = "cabac=1:deblock=1"
    screen_mode: bool = False
    grabber: str = "damage"
    xvfb_glx: bool = False
    grab_pixel_format: str = "I420"  # recorder.capture.grabber.PIXEL_FORMAT
    flag_set: str = "ours"
    chromium_add: tuple[str, ...] = field(default_factory=tuple)
    chromium_drop: tuple[str, ...] = field(default_factory=tuple)

    def chromium_flags(self) -> list[str]:
        drop = set(self.chromium_drop)
        flags = [f for f in FLAG_SETS[self.flag_set] if f not in drop and f.split("=", 1)[0] not in drop]
        return flags + [f for f in self.chromium_add if f not in flags]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chromium_add"] = list(self.chromium_add)
        data["chromium_drop"] = list(self.chromium_drop)
        return data

    @classmethod
    def defaults(cls) -> CaptureOptions:
        """The recorder's own settings as shipped (and as the environment overrides them)."""
        from recorder.config import RecorderSettings

        shipped = RecorderSettings()
        return cls(
            preset=shipped.preset,
            crf=shipped.crf,
            threads=shipped.encoder_threads,
            x264_params=shipped.x264_params,
            screen_mode=shipped.screen_mode,
            grabber=shipped.grabber,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptureOptions:
        data = dict(data)
        data["chromium_add"] = tuple(data.get("chromium_add", ()))
        data["chromium_drop"] = tuple(data.get("chromium_drop", ()))
        return cls(**data)


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("capture settings")
    group.add_argument("--size", default="1280x720", help="capture size WxH (default 1280x720)")
    group.add_argument("--fps", type=int, default=30)
    group.add_argument("--preset", default=None, help="libx264 preset (default: the recorder's)")
    group.add_argument("--crf", type=int, default=None, help="libx264 CRF (default: the recorder's)")
    group.add_argument("--x264-params", default=None, help="libx264 options over the preset")
    group.add_argument("--screen-mode", choices=("on", "off"), default=None, help="the screen mode at the capture rate")
    group.add_argument("--grabber", choices=("x11grab", "damage"), default=None, help="the screen grab")
    group.add_argument("--xvfb-glx", action="store_true", help="Xvfb with its GL extension, as before")
    group.add_argument(
        "--grab-pixel-format",
        choices=("I420", "BGR0"),
        default="I420",
        help="how the paced grab hands pictures to FFmpeg (BGR0: FFmpeg converts them, as before)",
    )
    group.add_argument("--threads", type=int, default=None, help="encoder threads (default: the recorder's, 1)")
    group.add_argument("--flags", dest="flag_set", choices=sorted(FLAG_SETS), default="ours", help="Chromium flag set")
    group.add_argument("--chromium-add", action="append", default=[], metavar="FLAG", help="add a Chromium flag")
    group.add_argument(
        "--chromium-drop", action="append", default=[], metavar="FLAG", help="drop a Chromium flag (name or name=value)"
    )


def capture_options(args: argparse.Namespace) -> CaptureOptions:
    shipped = CaptureOptions.defaults()
    width, _, height = args.size.partition("x")
    return replace(
        shipped,
        width=int(width),
        height=int(height),
        fps=args.fps,
        preset=args.preset or shipped.preset,
        crf=args.crf if args.crf is not None else shipped.crf,
        threads=args.threads if args.threads is not None else shipped.threads,
        x264_params=args.x264_params if args.x264_params is not None else shipped.x264_params,
        screen_mode=shipped.screen_mode if args.screen_mode is None else args.screen_mode == "on",
        grabber=args.grabber or shipped.grabber,
        xvfb_glx=args.xvfb_glx,
        grab_pixel_format=args.grab_pixel_format,
        flag_set=args.flag_set,
        chromium_add=tuple(args.chromium_add),
        chromium_drop=tuple(args.chromium_drop),
    )
