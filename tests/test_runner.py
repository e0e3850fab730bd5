"""sage-edge-run, the standalone C++ runner, driven as a user would on a real (tiny) model file.

The binary comes from $SAGE_EDGE_RUN or the native preset's build (conftest.built_binary: tests/
run_all.sh builds it before pytest; missing, it skips, or fails under CI). The model is the tiny
random-weight fixture (tests/data/make_tiny_model.py) with the project's real tokenizer: the grammar
mask, not training, is what makes its output decodable music, and that is what these tests check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import built_binary, require

torch = pytest.importorskip("torch")
mido = pytest.importorskip("mido")

from sage_edge.engine import DEFAULT_KV_MEMORY  # noqa: E402
from sage_edge.vocab import Kind  # noqa: E402

RUNNER = "csrc/runner/sage-edge-run"


@pytest.fixture(scope="module")
def runner() -> Path:
    if "SAGE_EDGE_RUN" in os.environ:
        path = Path(os.environ["SAGE_EDGE_RUN"])
        assert path.is_file() and os.access(path, os.X_OK), f"SAGE_EDGE_RUN={path}: no such program"
        return path
    return built_binary(RUNNER)


@pytest.fixture(scope="module")
def model_path(tiny_models) -> Path:
    return tiny_models["q8_0"]


def run(runner: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(runner), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def parse_events(stdout: str) -> list[tuple[float, float, int, int, int]]:
    events = []
    for line in stdout.splitlines():
        time, duration, pitch, velocity, program = line.split()
        events.append((float(time), float(duration), int(pitch), int(velocity), int(program)))
    return events


def test_help(runner):
    result = run(runner, "--help")
    assert result.stdout.startswith("usage: sage-edge-run --model FILE")
    assert "--programs" in result.stdout
    usage = " ".join(result.stdout.split())
    assert "bar b's parts in bar b + N (default 0: in time" in usage
    assert "--react, --no-react" in usage and "(default on)" in usage


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--model FILE is required"),
        # The engine's own checks (sage_sampling_check, sage_tempo_check), after the flag.
        (["--model", "{model}", "--top-p", "0"], "--top-p: top_p must be in (0, 1]"),
        (["--model", "{model}", "--min-p", "1"], "--min-p: min_p must be in [0, 1)"),
        (["--model", "{model}", "--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--model", "{model}", "--temperature", "1e39"], "temperature must be a finite number"),
        (["--model", "{model}", "--tempo", "3.5"], "--tempo: tempo must be in 3.57628..1000 BPM"),
        (["--model", "{model}", "--tempo", "0"], "tempo must be in 3.57628..1000 BPM"),
        (["--model", "{model}", "--tempo", "1001"], "tempo must be in 3.57628..1000 BPM"),
        # Two threads were slower than one at every model width measured (docs/results.md).
        (["--model", "{model}", "--threads", "2"], "unknown option '--threads'"),
        (["--model", "{model}", "--tokens", "ten"], "--tokens needs an integer"),
        (["--model", "{model}", "--tokens", "5", "--bars", "2"], "not both"),
        (["--model", "{model}", "--programs", "40,200"], "--programs needs"),
        (["--model", "{model}", "--frobnicate", "1"], "unknown option '--frobnicate'"),
        (["--model", "{model}", "--frobnicate"], "unknown option '--frobnicate'; the options are"),
        (["--model", "{model}", "--frobnicate"], "--model, --tokens, --bars"),
        (["--model", "{tmp}"], "'{tmp}' is a directory, not a model file"),
        (["--model", "{model}", "--out", "{tmp}"], "--out {tmp} is a directory"),
        (["--model", "{model}", "--out", "{tmp}/no/x.mid"], "directory {tmp}/no does not exist"),
        (["--model", "{model}", "--seed"], "--seed needs a value"),
        (["--model", "{missing}"], "cannot load model"),
        (["--model", "{model}", "--start-token", "513"], "--start-token must be below"),
        (["--model", "{model}", "--rt-priority", "50"], "--rt-priority applies to --midi-in or"),
        (["--model", "{model}", "--rt-priority", "100"], "--rt-priority needs an integer in 0..99"),
        (
            ["--model", "{model}", "--kv-memory", "f16"],
            "--kv-memory: kv memory must be f32 or int8",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(runner, model_path, tmp_path, args, message):
    names = {"model": model_path, "missing": tmp_path / "missing.sage", "tmp": tmp_path}
    args = [a.format(**names) for a in args]
    message = message.format(**names)
    result = run(runner, *args, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sage-edge-run: "), result.stderr
    assert message in lines[0]


def test_out_is_checked_before_generating(runner, model_path, tmp_path):
    # A billion tokens would take hours: the refusal must come before any of them.
    for out in (tmp_path, tmp_path / "no" / "x.mid"):
        result = run(runner, "--model", model_path, "--tokens", 10**9, "--out", out, check=False)
        assert result.returncode == 2 and "--out" in result.stderr


def test_temperature_takes_any_finite_float(runner, model_path):
    # The engine divides the logits by it; a huge one is nearly uniform sampling, not an error.
    result = run(runner, "--model", model_path, "--tokens", 100, "--temperature", "1e9")
    assert parse_events(result.stdout)


def test_defaults_are_the_engines(runner, model_path):
    from sage_edge import _engine

    top_p = _engine.DEFAULT_SAMPLING["top_p"]
    assert f"1 = off (default {top_p:g})" in run(runner, "--help").stdout
    args = ("--model", model_path, "--tokens", 300, "--seed", 4)
    assert run(runner, *args).stdout == run(runner, *args, "--top-p", f"{top_p:.9g}").stdout
    assert run(runner, *args).stdout != run(runner, *args, "--top-p", 1).stdout


def test_slowest_tempo_is_written_exactly(runner, model_path, tmp_path):
    out = tmp_path / "slow.mid"
    run(runner, "--model", model_path, "--tokens", 100, "--out", out, "--tempo", 3.57628)
    tempos = [m.tempo for m in mido.MidiFile(out).tracks[0] if m.type == "set_tempo"]
    assert tempos == [round(60e6 / 3.57628)]  # 16777210, just inside the 24-bit field


def test_not_a_model_file_is_a_usage_error(runner, tmp_path):
    bogus = tmp_path / "bogus.sage"
    bogus.write_bytes(b"MThd" + bytes(100))
    result = run(runner, "--model", bogus, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("sage-edge-run: cannot load model")


def test_info(runner, model_path, tokenizer):
    out = run(runner, "--model", model_path, "--info").stdout
    assert f"vocab_size       {tokenizer.vocab_size}" in out
    assert "attention        askv (6 families)" in out
    assert "horizons         32 8 (budget 40 tokens)" in out
    assert "q8_0" in out
    # 40 slots x 2 key/value heads x (key, value) x 8 values: f32, or int8 plus a scale each.
    kv_bytes = {"f32": 40 * 2 * 2 * 8 * 4, "int8": 40 * 2 * 2 * (8 + 4)}
    for kv in kv_bytes:
        out = run(runner, "--model", model_path, "--info", "--kv-memory", kv).stdout
        assert f"key/value {kv_bytes[kv]} ({kv})" in out
    # Without the option, the C API's default (the one sage_edge.Engine and the CLI take).
    out = run(runner, "--model", model_path, "--info").stdout
    assert f"key/value {kv_bytes[DEFAULT_KV_MEMORY]} ({DEFAULT_KV_MEMORY})" in out


def test_int8_kv_memory_generates_music(runner, model_path):
    args = ("--model", model_path, "--tokens", "200", "--seed", "3", "--events")
    int8 = run(runner, *args, "--kv-memory", "int8").stdout
    assert int8 == run(runner, *args, "--kv-memory", "int8").stdout  # reproducible
    assert len(int8.splitlines()) > 5


def test_events_are_notes_of_the_vocabulary(runner, model_path, tokenizer):
    result = run(runner, "--model", model_path, "--tokens", 400, "--seed", 7)
    events = parse_events(result.stdout)
    assert len(events) > 20
    table = tokenizer.token_table()
    velocities = {int(v) for v in table["a"][table["kind"] == Kind.VELOCITY]}
    tpq = tokenizer.ticks_per_quarter
    times = [e[0] for e in events]
    assert times == sorted(times)  # decoded in stream order: onsets never go back
    for time, duration, pitch, velocity, program in events:
        # %.4f of a whole number of ticks: the tick grid survives the printout
        assert abs(Fraction(time).limit_denominator(tpq) - Fraction(time)) < 1e-4
        assert duration > 0
        assert 21 <= pitch <= 108 if program != -1 else 27 <= pitch <= 88
        assert velocity in velocities
        assert -1 <= program <= 127
    assert "400 tokens" in result.stderr


def test_same_seed_same_bytes_other_seed_other_music(runner, model_path):
    args = ("--model", model_path, "--tokens", 300, "--temperature", 0.9, "--top-k", 50)
    first = run(runner, *args, "--seed", 11).stdout
    assert run(runner, *args, "--seed", 11).stdout == first
    assert run(runner, *args, "--seed", 12).stdout != first
    greedy = ("--model", model_path, "--tokens", 100, "--temperature", 0)
    assert run(runner, *greedy, "--seed", 1).stdout == run(runner, *greedy, "--seed", 2).stdout


def test_program_restriction(runner, model_path):
    result = run(runner, "--model", model_path, "--tokens", 300, "--programs", "40,41,-1")
    events = parse_events(result.stdout)
    assert events
    assert {e[4] for e in events} <= {40, 41, -1}


def test_bars(runner, model_path):
    args = ("--model", model_path, "--bars", 2, "--seed", 5, "--min-p", 0.05)
    result = run(runner, *args, "--kv-memory", "f32")
    assert ", 3 bars," in result.stderr  # stops at the Bar opening bar 3: bars 1 and 2 complete
    assert "warning" not in result.stderr
    assert parse_events(result.stdout)
    # This seed's int8 session ends the piece with EOS in bar 2 (--end cadence allows it there):
    # complete too, with no Bar after it, so no warning.
    ended = run(runner, *args, "--kv-memory", "int8")
    assert ", 2 bars," in ended.stderr and "warning" not in ended.stderr
    # A token cap that cuts the piece short says so.
    capped = run(runner, "--model", model_path, "--bars", 50, "--max-tokens", 40, "--seed", 5)
    assert "warning: stopped at --max-tokens 40 with " in capped.stderr
    assert "sage-edge-run: 40 tokens, " in capped.stderr


def test_midi_file_parses_with_mido(runner, model_path, tmp_path):
    out = tmp_path / "out.mid"
    args = ("--model", model_path, "--tokens", 400, "--seed", 3, "--programs", "40,41,42,-1")
    events = parse_events(run(runner, *args).stdout)
    result = run(runner, *args, "--out", out, "--tempo", 90)
    assert result.stdout == ""  # --out alone prints no events

    midi = mido.MidiFile(out)
    assert midi.type == 1
    assert midi.ticks_per_beat == 480
    programs = sorted({e[4] for e in events}, key=lambda p: 128 if p < 0 else p)
    assert len(midi.tracks) == 1 + len(programs)
    tempos = [m for m in midi.tracks[0] if m.type == "set_tempo"]
    assert [m.tempo for m in tempos] == [round(60e6 / 90)]

    ons, offs = [], []
    for track, program in zip(midi.tracks[1:], programs, strict=True):
        changes = [m for m in track if m.type == "program_change"]
        channels = {m.channel for m in track if m.type in ("note_on", "note_off")}
        if program == -1:
            assert not changes and channels == {9}
        else:
            assert [m.program for m in changes] == [program] and 9 not in channels
        # Note-ons and note-offs compared apart: two notes of one pitch sounding together (the
        # drums do that) leave MIDI no way to say which note-off ends which.
        tick = 0
        for m in track:
            tick += m.time
            if m.type == "note_on":
                ons.append((tick, m.note, m.velocity, program))
            elif m.type == "note_off":
                offs.append((tick, m.note, program))
        assert track[-1].type == "end_of_track"
    ticks = [(round(t * 480), max(1, round(d * 480)), p, v, g) for t, d, p, v, g in events]
    assert sorted(ons) == sorted((on, p, v, g) for on, _, p, v, g in ticks)
    # Each note ends as it was generated, or where its pitch is struck again while it sounds.
    ends = []
    for on, length, pitch, _, program in ticks:
        again = [o for o, _, q, _, g in ticks if (q, g) == (pitch, program) and on < o]
        ends.append((min([on + length, *again]), pitch, program))
    assert sorted(offs) == sorted(ends)


def test_aarch64_build_gives_the_same_bytes(runner, model_path):
    """The aarch64 preset's build prints exactly the x86 notes under qemu."""
    arm = built_binary(RUNNER, "aarch64")
    qemu = shutil.which("qemu-aarch64")
    require(qemu is not None, "qemu-aarch64 is missing: apt-get install qemu-user")
    sysroot = Path("/usr/aarch64-linux-gnu")
    args = ["--model", model_path, "--tokens", 200, "--seed", 9, "--top-p", 0.95]
    x86 = run(runner, *args).stdout
    env = {**os.environ, "QEMU_LD_PREFIX": str(sysroot)}
    for cpu in ("cortex-a72", "cortex-a76"):
        arm_run = subprocess.run(
            [qemu, "-cpu", cpu, str(arm), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert arm_run.returncode == 0, arm_run.stderr
        assert arm_run.stdout == x86, cpu


@pytest.mark.parametrize("which", ["fixture", "shipped"])
def test_midi_file_bars_are_the_generated_bars(runner, model_path, tokenizer, tmp_path, which):
    """--out writes a time signature wherever the generated bars' TimeSig tokens change it, and
    --bars N gives exactly N notated bars: no note sounds past the last bar line."""
    from sage_edge.engine import DEFAULT_MODEL, Engine
    from sage_edge.vocab import Kind

    model = model_path if which == "fixture" else DEFAULT_MODEL
    if not model.is_file():
        pytest.skip("no default model is packaged")
    bars, seed, out = 6, 3, tmp_path / "bars.mid"  # seed 3: the shipped model plays 3/4
    args = ("--model", model, "--bars", bars, "--seed", seed)
    events = parse_events(run(runner, *args, "--events", "--out", out).stdout)

    # The same tokens from the engine in Python: the same session, seed and default sampling, fed
    # BOS, generating one token at a time until the Bar that opens bar N + 1.
    session = Engine(model).session(seed=seed)
    session.feed([tokenizer.id_of("BOS_None")])
    tokens = []
    while session.bar.index <= bars:
        tokens += session.generate(1)
    table = tokenizer.token_table()
    signatures = [
        (int(table["a"][t]), int(table["b"][t])) for t in tokens if table["kind"][t] == Kind.TIMESIG
    ]
    assert len(signatures) == bars

    midi = mido.MidiFile(out)
    tick, changes = 0, []
    for message in midi.tracks[0]:
        tick += message.time
        if message.type == "time_signature":
            changes.append((tick, message.numerator, message.denominator))
    tick, written = 0, []
    for _ in range(bars):
        at, numerator, denominator = max(c for c in changes if c[0] <= tick)
        length = 480 * 4 * numerator // denominator
        assert not [c for c in changes if tick < c[0] < tick + length]  # nothing cuts a bar short
        written.append((numerator, denominator))
        tick += length
    assert written == signatures
    assert all(c[0] < tick for c in changes)

    notes_end = 0
    for track in midi.tracks[1:]:
        notes_end = max(notes_end, sum(m.time for m in track))
    assert notes_end <= tick  # the file ends on the last bar line
    note_ons = sum(m.type == "note_on" for track in midi.tracks for m in track)
    assert note_ons == len(events)  # every generated note starts inside the bars
