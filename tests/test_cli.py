"""The `sage-edge` command line stopped and misused as people do: a closed pipe, Ctrl-C, outputs
that cannot be written, and what --help promises."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_edge.engine import DEFAULT_KV_MEMORY, DEFAULT_SAMPLING, TEMPO_RANGE_BPM

FIXTURE_MODEL = Path(__file__).parent / "data" / "tiny_q8_0.sage"
CLI = [sys.executable, "-m", "sage_edge.cli"]
ENDLESS_STREAM = ["stream", "--model", str(FIXTURE_MODEL), "--bars", "100000", "--seed", "1"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("realtime", [[], ["--realtime", "--tempo", "1000"]])
def test_a_closed_pipe_ends_the_stream_quietly(realtime):
    # `sage-edge stream | head -2`: the reader takes two lines and closes its end of the pipe.
    with subprocess.Popen(
        [*CLI, *ENDLESS_STREAM, *realtime],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        first_two = [process.stdout.readline(), process.stdout.readline()]
        process.stdout.close()
        code = process.wait(timeout=60)
        errors = process.stderr.read()
    assert all(line.startswith('{"time": ') for line in first_two)
    assert code == 0
    assert errors == ""  # not "Broken pipe", not "Exception ignored ... BrokenPipeError"


def test_ctrl_c_stops_a_realtime_stream_promptly():
    with subprocess.Popen(
        [*CLI, *ENDLESS_STREAM, "--realtime"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout.readline().startswith('{"time": ')
        # The tiny model generates ahead far faster than 120 BPM plays: by now the generating
        # thread has filled its queue and waits for room, the state that used to ignore Ctrl-C.
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        try:
            code = process.wait(timeout=10)
        finally:
            process.kill()
        stopped_in = time.perf_counter() - sent
        errors = process.stderr.read()
    assert code == 130
    # An endless stream ignoring Ctrl-C would run until the kill at 10 s; a loaded shared host
    # took up to 2.05 s to exit after the signal.
    assert stopped_in < 5.0
    assert "Traceback" not in errors and errors == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}"], "--out {tmp} is a directory"),
        (["--out", "{tmp}/missing/x.mid"], "--out {tmp}/missing/x.mid: directory"),
        (["--out", "{tmp}/x.mid", "--plot", "{tmp}"], "--plot {tmp} is a directory"),
        (["--model", "{tmp}"], "is a directory, not a model file"),
        (["--model", "{tmp}/missing.sage"], "does not exist"),
        (["--tempo", "1"], "tempo must be in 3.57628..1000 BPM"),
        (["--kv-memory", "f16"], "kv memory must be f32 or int8, not 'f16'"),
    ],
)
def test_outputs_and_model_are_checked_before_generating(args, message, tmp_path):
    # 100 000 bars would take hours: the refusal must come before generating.
    args = [a.format(tmp=tmp_path) for a in args]
    model = [] if "--model" in args else ["--model", str(FIXTURE_MODEL)]
    done = run_cli("generate", *model, "--bars", "100000", *args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sage-edge: ")
    assert message.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "x.mid").exists()


def test_help_shows_the_engines_defaults_and_the_tempo_range():
    generate = run_cli("generate", "--help").stdout
    assert f"1 = off ({DEFAULT_SAMPLING['top_p']:g})" in generate
    assert f"{TEMPO_RANGE_BPM[0]:.6g}..{TEMPO_RANGE_BPM[1]:g}" in generate
    assert f"memory) ({DEFAULT_KV_MEMORY})" in " ".join(generate.split())
    bench = " ".join(run_cli("bench", "--help").stdout.split())
    assert "about a minute and about 340 MB" in bench and "--quick" in bench
    jam = " ".join(run_cli("jam", "--help").stdout.split())
    assert "default 0: in time" in jam and "default one beat" in jam
    assert "--react, --no-react" in jam and "(default on)" in jam
