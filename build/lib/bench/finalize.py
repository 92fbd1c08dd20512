"""Finalize benchmark: time from "rec.mp4 is ready" to "object confirmed in S3", versus a plain disk copy.

Recordings of 1, 10 and 60 minutes at 720p30 (H.264 CBR ~2 Mbit/s + AAC 128 kbit/s, what the recorder
produces for a busy page) are generated cheaply: one minute with lavfi, the longer ones by concatenating
it with stream copy. Each is stored through the attempt's `Destination` against a loopback S3-compatible server
(moto in server mode, in a subprocess) with the default transfer options: multipart with concurrent
parts, SHA-256 per part, size and checksum verified after. For comparison the same file is copied on
the same disk, without and with fsync.

    python -m bench.finalize [--minutes 1 10 60] [--repeat 3] [--workdir DIR]

Writes bench/results/finalize-<date>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore
import structlog

from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.storage import TransferOptions, destination_for
from recorder.storage.checksum import file_sha256

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "bench-finalize"
VIDEO_BITRATE = "2000k"


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def make_media(workdir: Path, minutes: list[int]) -> dict[int, Path]:
    """One minute encoded with lavfi, longer recordings concatenated from it by stream copy (faststart)."""
    one = workdir / "rec-1min.mp4"
    if not one.exists():
        run([
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "60",
            "-b:v", VIDEO_BITRATE, "-maxrate", VIDEO_BITRATE, "-bufsize", "4000k", "-x264-params", "nal-hrd=cbr",
            "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(one),
        ])
    media: dict[int, Path] = {}
    for n in minutes:
        if n == 1:
            media[n] = one
            continue
        out = workdir / f"rec-{n}min.mp4"
        if not out.exists():
            listing = workdir / f"concat-{n}.txt"
            listing.write_text("".join(f"file '{one}'\n" for _ in range(n)))
            run([
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(out),
            ])
        media[n] = out
    return media


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip())


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return proc, endpoint
        except urllib.error.HTTPError:
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def time_copy(src: Path, dst: Path, *, fsync: bool) -> float:
    started = time.perf_counter()
    shutil.copyfile(src, dst)
    if fsync:
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - started
    dst.unlink()
    return elapsed


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_upload(media: Path, recording_id: str, settings: RecorderSettings, options: TransferOptions,
                client: Any, server_pid: int) -> dict[str, Any]:
    """Wall time of `Destination.store`, plus the CPU it cost here and in the server (robust to a busy machine)."""
    meta = media.with_suffix(".json")
    meta.write_text(json.dumps({"recording_id": recording_id}))
    load = os.getloadavg()[0]
    cpu, server_cpu = self_cpu(), process_cpu(server_pid)
    folder = AttemptFolder.under(settings.records_dir, recording_id)
    dest = destination_for(settings, folder, started_at=datetime.now(UTC), options=options)
    started = time.perf_counter()
    result = dest.store({"rec.mp4": media, "rec.json": meta})
    elapsed = time.perf_counter() - started
    cpu, server_cpu = self_cpu() - cpu, process_cpu(server_pid) - server_cpu
    assert not result.pending and result.location.startswith("s3://"), result
    for obj in result.objects:  # free the server's memory for the next run
        client.delete_object(Bucket=BUCKET, Key=obj.location.split("/", 3)[3])
    return {
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "server_cpu_s": server_cpu,
        "load_1min": load,
        "parts": result.objects[0].parts,
    }


def machine() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str | None:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return None

    mem_kb = first("/proc/meminfo", "MemTotal")
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ffmpeg": ffmpeg,
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "s3_server": "moto " + __import__("moto").__version__ + " (server mode, loopback)",
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where media is generated (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    # the loopback server accepts any credentials; these never leave this machine
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-finalize-"))
    workdir.mkdir(parents=True, exist_ok=True)
    proc, endpoint = start_moto()
    try:
        print(f"generating media in {workdir} ...", flush=True)
        t0 = time.perf_counter()
        media = make_media(workdir, args.minutes)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

        settings = RecorderSettings(
            records_dir=workdir / "records", s3_bucket=BUCKET, s3_endpoint_url=endpoint, keep_local=True
        )
        options = TransferOptions()
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        time_upload(media[min(media)], "warmup", settings, options, client, proc.pid)

        rows = []
        for minutes, path in sorted(media.items()):
            size = path.stat().st_size
            copies = [time_copy(path, workdir / "copy.mp4", fsync=False) for _ in range(args.repeat)]
            synced = [time_copy(path, workdir / "copy.mp4", fsync=True) for _ in range(args.repeat)]
            hashing = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                file_sha256(path)
                hashing.append(time.perf_counter() - started)
            uploads = [
                time_upload(path, f"bench-{minutes}min-{i}", settings, options, client, proc.pid)
                for i in range(args.repeat)
            ]
            seconds = [u["seconds"] for u in uploads]
            row = {
                "minutes": minutes,
                "duration_s": round(duration(path), 2),
                "bytes": size,
                "mbit_per_s": round(size * 8 / duration(path) / 1e6, 2),
                "parts": uploads[0]["parts"],
                "upload_confirmed_s": summary(seconds),
                "upload_mib_per_s": round(size / 1024 / 1024 / statistics.median(seconds), 1),
                "upload_client_cpu_s": summary([u["client_cpu_s"] for u in uploads]),
                "upload_server_cpu_s": summary([u["server_cpu_s"] for u in uploads]),
                "load_1min_during_uploads": summary([u["load_1min"] for u in uploads]),
                "copy_s": summary(copies),
                "copy_fsync_s": summary(synced),
                "sha256_s": summary(hashing),
                "upload_vs_copy_fsync": round(statistics.median(seconds) / statistics.median(synced), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop(proc)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "benchmark": "finalize: rec.mp4 ready -> object confirmed in S3",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": options.model_dump(),
        "media": "720p30 H.264 ultrafast CBR 2 Mbit/s + AAC 128 kbit/s, faststart MP4; "
                 "1 min from lavfi, longer ones concatenated by stream copy",
        "method": "Destination.store (multipart, concurrent parts, SHA-256 per part, head_object verify) against "
                  "moto server mode on 127.0.0.1; copy = shutil.copyfile on the same disk, with and without fsync; "
                  f"median of {args.repeat} runs",
        "notes": "the machine is shared (see load_1min): wall times vary with it; CPU seconds of the client "
                 "(this process: hashing, HTTP) and of the S3 server show the work itself",
        "results": rows,
    }
    out = args.out or RESULTS / f"finalize-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
