"""The benchmark harness: process sampling, figures, settings, result files and command lines (no media)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import machine, results, sinkclock
from bench.capture_options import FLAG_SETS, CaptureOptions
from bench.latency import percentile
from bench.metrics import holds, recording_figures
from bench.peer_commands import PEERS, Sources
from bench.procstats import TreeSampler, category
from bench.soak import growth


def test_sampler_sees_the_cpu_and_memory_of_a_process_tree() -> None:
    # A parent that idles and a child that spins: the tree's CPU is the child's, about one core.
    script = (
        "import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.time()\\nwhile time.time()-t<3: pass']);"
        "c.wait()"
    )
    sampler = TreeSampler(interval=0.2, pss_every=2).start()
    proc = subprocess.Popen([sys.executable, "-c", script])
    sampler.watch("tree", proc.pid)
    began = time.time()
    proc.wait(timeout=30)
    sampler.stop()
    usage = sampler.usage("tree", began + 0.5, began + 2.5)
    assert usage is not None
    assert usage.processes == 2
    assert 0.5 < usage.cpu_cores["recorder"] < 1.3
    assert usage.peak_rss_mb > 5
    assert usage.peak_pss_mb is not None and usage.peak_pss_mb > 1


def test_process_kinds() -> None:
    assert category("chromium") == "chromium"
    assert category("chrome_crashpad") == "chromium"
    assert category("ffmpeg") == "ffmpeg"
    assert category("Xvfb") == "xvfb"
    assert category("pulseaudio") == "pulseaudio"
    assert category("node") == "driver"
    assert category("python3.11") == "recorder"
    assert category("gst-launch-1.0") == "gstreamer"


def _done(frames: int, repeated: int, duration: float, frozen: list[dict[str, float]]) -> dict:
    return {
        "ok": True,
        "quality": {
            "size": 1_000_000,
            "bit_rate": 1_200_000,
            "video": {"duration": duration, "frames": frames, "repeated_frames": repeated, "frozen": frozen,
                      "gap_count": 0, "delivered_fps": frames / duration},
            "sync": {"markers": 50, "mean_ms": -3.0, "p95_abs_ms": 9.0, "std_ms": 4.0, "drift_ms": 1.0},
        },
        "progress": {"duplicated": 2, "dropped": 0, "speed": 1.0, "behind": False},
    }  # fmt: skip


def test_figures_split_the_start_freeze_from_steady_fps() -> None:
    # 60 s at 30 fps; the first 0.8 s held (24 frames, 23 repeats), 10 more repeats later.
    row = recording_figures(_done(1800, 33, 60.0, [{"at": 0.0, "length": 0.8}]), {"capture_cores": 0.35})
    assert row["start_freeze_s"] == 0.8
    assert row["frozen_spans"] == 0
    assert row["distinct_fps"] == pytest.approx((1800 - 33) / 60, abs=1e-3)
    assert row["steady_fps"] == pytest.approx((1800 - 33 - 1) / 59.2, abs=1e-3)
    assert row["bitrate_kbps"] == 1200.0
    assert row["capture_cores"] == 0.35
    assert holds(row)


def test_a_freeze_in_the_middle_fails_the_density_criterion() -> None:
    row = recording_figures(_done(1800, 20, 60.0, [{"at": 30.0, "length": 0.6}]), None)
    assert row["start_freeze_s"] == 0.0
    assert row["frozen_spans"] == 1
    assert not holds(row)
    slow = recording_figures(_done(1800, 60, 60.0, []), None)
    assert slow["steady_fps"] == pytest.approx(29.0)
    assert not holds(slow)


def test_chromium_flag_sets_can_be_adjusted() -> None:
    options = CaptureOptions(flag_set="ours", chromium_drop=("--disable-gpu", "--window-position"),
                             chromium_add=("--enable-gpu-rasterization",))  # fmt: skip
    flags = options.chromium_flags()
    assert "--disable-gpu" not in flags
    assert not any(f.startswith("--window-position") for f in flags)
    assert flags[-1] == "--enable-gpu-rasterization"
    assert set(FLAG_SETS["naive"]) < set(FLAG_SETS["ours"])
    assert CaptureOptions.from_dict(options.as_dict()) == options


def test_result_files_carry_the_machine(tmp_path: Path) -> None:
    path = results.write_result("unit", {"x": 1}, options={"n": 2}, directory=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("unit-") and path.suffix == ".json"
    document = json.loads(path.read_text())
    assert document["results"] == {"x": 1}
    for key in ("cores", "memory_gib", "cpu_model", "kernel", "date", "chromium", "ffmpeg"):
        assert key in document["machine"]
    assert len(document["load_at_end"]) == 3


def test_quiet_check_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, why = machine.quiet(max_load=-1.0)
    assert not ok and "load" in why
    monkeypatch.setattr(machine, "media_processes", lambda: ([], []))
    monkeypatch.setattr(machine, "cpu_steal", lambda: 0.056)  # a busy neighbour on the host
    ok, why = machine.quiet(max_load=1e9)
    assert not ok and "steal 5.6%" in why
    monkeypatch.setattr(machine, "cpu_steal", lambda: 0.001)
    ok, why = machine.quiet(max_load=1e9)
    assert ok and "steal 0.1%" in why


def test_cpu_steal_is_a_share_of_this_machines_cpu_time() -> None:
    assert 0.0 <= machine.cpu_steal(0.2) <= 1.0


def test_dispatch_lists_and_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main.main(["--help"]) == 0
    assert "simulate" in capsys.readouterr().out
    assert bench_main.main(["nope"]) == 2
    assert bench_main.main([]) == 2


def test_peer_command_lines_use_our_display_and_sink(tmp_path: Path) -> None:
    sources = Sources(display=":42", monitor="rec_7.monitor", width=1280, height=720, fps=30)
    for name, peer in PEERS.items():
        argv = peer.argv(sources, tmp_path / peer.output_name)
        text = " ".join(argv)
        assert ":42" in text, name
        assert "rec_7.monitor" in text, name
        assert str(tmp_path / peer.output_name) in text, name
        assert argv[0] == ("gst-launch-1.0" if peer.kind == "gstreamer" else "ffmpeg"), name
    jibri = PEERS["jibri"].argv(sources, tmp_path / "j.mp4")
    assert jibri[jibri.index("-preset") + 1] == "ultrafast" and jibri[jibri.index("-crf") + 1] == "25"
    livekit = " ".join(PEERS["livekit"].argv(sources, tmp_path / "l.mp4"))
    assert "speed-preset=veryfast bitrate=3000" in livekit and "videorate" in livekit


def test_soak_growth_and_percentiles() -> None:
    series = [{"at": 60.0 * i, "rss_mb": {"chromium": 300 + i, "ffmpeg": 80.0}, "pss_mb": None} for i in range(31)]
    g = growth(series, 0.0, 1800.0, "rss_mb")
    assert g["chromium"]["growth_mb"] == 30.0
    assert g["chromium"]["slope_mb_per_hour"] == pytest.approx(60.0)
    assert g["ffmpeg"]["growth_mb"] == 0.0
    assert g["total"]["growth_mb"] == 30.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0


def test_arms_alternate_their_order_every_round() -> None:
    from bench.order import alternating

    assert list(alternating(["on", "off"], 3)) == [(0, "on"), (0, "off"), (1, "off"), (1, "on"), (2, "on"), (2, "off")]
    assert list(alternating(["a"], 0)) == []


def test_sink_clock_rate_is_read_in_ppm_whatever_the_start() -> None:
    times = np.linspace(100.0, 130.0, 1500)
    fast = 48000 * 1.000125 * (times - times[0]) + 123_456  # a sink 125 ppm fast, counted from any sample
    assert sinkclock.rate_ppm(times, fast) == pytest.approx(125.0, abs=0.01)
    rng = np.random.default_rng(1)
    true = 48000 * (times - times[0])
    late = rng.exponential(0.002, times.size)  # a read is stamped after its samples came, never before
    assert sinkclock.rate_ppm(times + late, true) == pytest.approx(0.0, abs=20)
    # A machine that grows busier: reads later and later, up to 20 ms, but a few each second on time.
    busier = rng.uniform(0, 0.020 * (times - times[0]) / 30)
    busier[::10] = 0.0
    assert abs(np.polyfit(times + busier - times[0], true, 1)[0] / 48000 - 1) * 1e6 > 100, "a fit through all"
    assert sinkclock.rate_ppm(times + busier, true) == pytest.approx(0.0, abs=5)
    with pytest.raises(ValueError, match="two whole windows"):
        sinkclock.rate_ppm(times[:60], true[:60])  # 1.2 s: one whole window
