"""The encoder benchmark's pure parts: candidates -> FFmpeg argv, and reading FFmpeg's reports (no media)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import encoder
from bench.encoder import Candidate

SOURCE, OUT = Path("/clip/raw.nut"), Path("/clip/out.mp4")

SSIM_STDERR = """\
[Parsed_ssim_6 @ 0x55d1] SSIM Y:0.981234 (17.26) U:0.990000 (20.00) V:0.991000 (20.46) All:0.984567 (18.12)
[Parsed_psnr_7 @ 0x55d2] PSNR y:41.20 u:45.10 v:45.90 average:42.375 min:39.01 max:47.80
"""


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_ssim_and_psnr_are_read_from_the_summary_lines() -> None:
    assert encoder.parse_ssim(SSIM_STDERR) == pytest.approx(0.984567)
    assert encoder.parse_psnr(SSIM_STDERR) == pytest.approx(42.375)


def test_identical_pictures_and_missing_lines() -> None:
    identical = "[Parsed_psnr_1 @ 0x1] PSNR y:inf u:inf v:inf average:inf min:inf max:inf\n"
    assert encoder.parse_psnr(identical) == float("inf")
    assert encoder.parse_ssim("Conversion failed!\n") is None
    assert encoder.parse_psnr("") is None


def test_the_baseline_encodes_as_the_recorder_does() -> None:
    today = next(c for c in encoder.CANDIDATES if c.name == "today")
    argv = encoder.candidate_argv(today, SOURCE, OUT)
    assert argv[0] == "ffmpeg" and _after(argv, "-i") == str(SOURCE)
    assert _after(argv, "-c:v") == "libx264"
    assert _after(argv, "-preset") == "veryfast" and _after(argv, "-crf") == "23"
    assert _after(argv, "-tune") == "zerolatency" and _after(argv, "-pix_fmt") == "yuv420p"
    assert _after(argv, "-g") == "60" and _after(argv, "-keyint_min") == "60" and _after(argv, "-sc_threshold") == "0"
    assert _after(argv, "-threads") == "1"
    assert "-an" in argv and "-x264-params" not in argv and "-sws_flags" not in argv
    assert argv[-3:] == ["-f", "mp4", str(OUT)]


def test_levers_reach_the_command_line() -> None:
    lean = Candidate("x", preset="superfast", crf=20, x264_params="me=dia:subme=1", threads=2, sws_flags="bilinear")
    argv = encoder.candidate_argv(lean, SOURCE, OUT)
    assert _after(argv, "-preset") == "superfast" and _after(argv, "-crf") == "20"
    assert _after(argv, "-x264-params") == "me=dia:subme=1"
    assert _after(argv, "-threads") == "2"
    # An output option: it must come after the input and before the output file.
    assert argv.index("-i") < argv.index("-sws_flags") < argv.index(str(OUT))
    assert _after(argv, "-sws_flags") == "bilinear"


def test_stages_have_no_encoder() -> None:
    read = encoder.candidate_argv(Candidate("read", stage="read"), SOURCE, OUT)
    convert = encoder.candidate_argv(Candidate("convert", stage="convert"), SOURCE, OUT)
    assert _after(read, "-c") == "copy" and read[-3:] == ["-f", "null", "-"]
    assert _after(convert, "-vf") == "format=yuv420p" and convert[-3:] == ["-f", "null", "-"]
    for argv in (read, convert):
        assert "libx264" not in argv and str(OUT) not in argv


def test_quality_converts_the_reference_with_the_flags_asked() -> None:
    default = encoder.quality_argv(OUT, SOURCE)
    own = encoder.quality_argv(OUT, SOURCE, "fast_bilinear")
    assert [a for a in default if a == "-i"] == ["-i", "-i"]
    assert default.index(str(OUT)) < default.index(str(SOURCE))  # the encoded file is the main input
    graph = _after(default, "-lavfi")
    assert "[1:v]format=yuv420p" in graph and "ssim" in graph and "psnr" in graph and "sws_flags" not in graph
    assert _after(own, "-lavfi").startswith("sws_flags=fast_bilinear;")


def test_full_colour_brings_both_sides_to_444_and_a_via_candidate_converts_by_way_of_its_format() -> None:
    full = _after(encoder.quality_argv(OUT, SOURCE, "neighbor", "bgr24", full_colour=True), "-lavfi")
    # Both sides alike, whatever the candidate's own conversion: the loss is measured against the page's pictures.
    assert full.count(encoder.UP_TO_444) == 2 and "sws_flags" not in full and "yuv420p" not in full
    via = Candidate("v", stage="convert", via="bgr24")
    assert _after(encoder.candidate_argv(via, SOURCE, OUT), "-vf") == "format=bgr24,format=yuv420p"
    own = _after(encoder.quality_argv(OUT, SOURCE, None, "bgr24"), "-lavfi")
    assert "[1:v]format=bgr24,format=yuv420p" in own
    encode = encoder.candidate_argv(Candidate("e", preset="ultrafast", via="bgr24"), SOURCE, OUT)
    assert _after(encode, "-vf") == "format=bgr24,format=yuv420p" and "libx264" in encode
    assert Candidate("s", sws_flags="neighbor").own_conversion and not Candidate("d").own_conversion


def test_candidate_names_are_unique_and_selection_keeps_the_baseline_and_stages() -> None:
    names = [c.name for c in encoder.CANDIDATES]
    assert len(names) == len(set(names))
    chosen = [c.name for c in encoder.select(["ultrafast", "lean"])]
    assert set(chosen) == {"ultrafast", "lean", *encoder.ALWAYS}
    assert [c.name for c in encoder.select(None)] == names
    with pytest.raises(ValueError, match="nope"):
        encoder.select(["nope"])


def test_rounds_alternate_candidates() -> None:
    table = [Candidate("a"), Candidate("b"), Candidate("c")]
    order = [[c.name for c in r] for r in encoder.rounds(table, 4)]
    assert order == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_framemd5_counts_frames_distinct_frames_and_span() -> None:
    text = """\
#format: frame checksums
#version: 2
#hash: MD5
#tb 0: 1/1000000
#media_type 0: video
#stream#, dts,        pts, duration,     size, hash
0,    1000000,    1000000,    33333,  3686400, aaa
0,    1033333,    1033333,    33333,  3686400, aaa
0,    1066667,    1066667,    33333,  3686400, bbb
0,    1100000,    1100000,    33333,  3686400, aaa
"""
    clip = encoder.parse_framemd5(text, fps=30)
    assert (clip.frames, clip.distinct) == (4, 3)
    assert clip.seconds == pytest.approx(0.1 + 1 / 30, abs=1e-3)


def test_x264_options_are_read_from_the_stream_and_compared(tmp_path: Path) -> None:
    sei = b"x264 - core 164 r3095 - H.264/MPEG-4 AVC codec - options: cabac=1 ref=1 me=hex subme=2 trellis=0\x00"
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 100 + sei + b"\x00" * 100)
    options = encoder.x264_options(mp4)
    assert options == {"cabac": "1", "ref": "1", "me": "hex", "subme": "2", "trellis": "0"}
    changed = encoder.options_changed({**options, "me": "dia"}, options)
    assert changed == {"me": "dia (was hex)"}
    assert encoder.options_changed(options, options) == {}


def test_cost_split_subtracts_the_stages() -> None:
    rows = [
        {"candidate": "read", "cores": {"median": 0.04}},
        {"candidate": "convert", "cores": {"median": 0.12}},
        {"candidate": "today", "cores": {"median": 0.35}},
    ]
    split = encoder.cost_split(rows)
    assert split["read"] == pytest.approx(0.04)
    assert split["convert_only"] == pytest.approx(0.08)
    assert split["encode_only_today"] == pytest.approx(0.23)
