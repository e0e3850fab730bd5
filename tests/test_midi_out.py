"""sage-edge-run --midi-out: real-time MIDI 1.0 bytes to a device, read back from a pseudo-terminal.

The runner writes to the slave side of a pty (what a USB-serial MIDI adapter or the Pi's UART looks
like to a program); the test reads the master side, time-stamps each byte as it arrives and parses
the stream with mido. The notes must be the ones `--events` prints for the same seed, each sent at
its scheduled time (quarter notes x 60 / tempo) within a tolerance, and no note may be left
sounding. The binary comes from $SAGE_EDGE_RUN or the native preset build (build/native).
"""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import time
import tty
from pathlib import Path

import pytest
from conftest import built_binary

mido = pytest.importorskip("mido")

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "tiny_q8_0.sage"
TEMPO = 1000  # beats per minute: a quarter note is 60 ms, the piece about 2.5 s
TOLERANCE = 0.02  # seconds between a message's arrival and its scheduled time


@pytest.fixture(scope="module")
def runner() -> Path:
    if "SAGE_EDGE_RUN" in os.environ:
        return Path(os.environ["SAGE_EDGE_RUN"])
    return built_binary("csrc/runner/sage-edge-run")  # Release: no sanitizer in the timing


@pytest.fixture
def pty():
    """A raw pseudo-terminal: (master fd, slave path). The slave stays open on our side too, so
    the master does not read EIO between the runner's open and close."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def read_messages(master: int, process: subprocess.Popen, stop_after: float | None = None):
    """Reads until the runner exits and the pty is drained: [(arrival seconds, mido.Message)].
    With stop_after, sends SIGINT that many seconds after the first message arrived."""
    parser = mido.Parser()
    received = []
    interrupted = False
    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        now = time.monotonic()
        if ready:
            for byte in os.read(master, 4096):
                parser.feed_byte(byte)
                received.extend((now, m) for m in parser)
        elif process.poll() is not None:
            break
        if stop_after and received and not interrupted and now - received[0][0] > stop_after:
            process.send_signal(signal.SIGINT)
            interrupted = True
    return received


def expected_notes(runner: Path, args: list[str]) -> list[tuple[float, float, int, int, int]]:
    result = subprocess.run(
        [str(runner), *args, "--events"], capture_output=True, text=True, timeout=60, check=True
    )
    notes = []
    for line in result.stdout.splitlines():
        t, d, pitch, velocity, program = line.split()
        notes.append((float(t), float(d), int(pitch), int(velocity), int(program)))
    return notes


def test_midi_out_plays_the_generated_notes_on_time(runner, pty):
    master, device = pty
    # A quartet and drums, as an instrument would restrict it: one channel per program.
    args = ["--model", str(MODEL), "--tokens", "160", "--seed", "7", "--programs", "0,40,41,42,-1"]
    notes = expected_notes(runner, args)
    assert len(notes) > 20

    process = subprocess.Popen(
        [str(runner), *args, "--midi-out", device, "--tempo", str(TEMPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    received = read_messages(master, process)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stdout == ""  # --midi-out alone prints no events

    # Programs: one program change per melodic program before its first note; drums on channel 10.
    program_of = {9: -1}
    for _, m in received:
        if m.type == "program_change":
            assert m.channel != 9 and m.channel not in program_of
            program_of[m.channel] = m.program
    assert sorted(program_of.values()) == sorted({n[4] for n in notes} | {-1})

    # Note-ons: exactly the generated notes, in the order they were generated.
    note_ons = [(t, m) for t, m in received if m.type == "note_on"]
    assert [(m.note, m.velocity, program_of[m.channel]) for _, m in note_ons] == [
        (pitch, velocity, program) for _, _, pitch, velocity, program in notes
    ]

    # Timing: arrival = scheduled time x 60 / tempo + one constant offset (the start).
    seconds = 60.0 / TEMPO
    offset = statistics.median(
        a - n[0] * seconds for (a, _), n in zip(note_ons, notes, strict=True)
    )
    for (arrival, m), note in zip(note_ons, notes, strict=True):
        assert abs(arrival - offset - note[0] * seconds) < TOLERANCE, (m, note)

    # Note-offs: each ends a generated note of its pitch and program at that note's end time, and
    # nothing is left sounding.
    sounding: dict[tuple[int, int], int] = {}
    for arrival, m in received:
        key = (m.channel, getattr(m, "note", -1))
        if m.type == "note_on":
            sounding[key] = sounding.get(key, 0) + 1
        elif m.type == "note_off":
            sounding.pop(key)
            ends = [
                (t + d) * seconds
                for t, d, pitch, _, program in notes
                if pitch == m.note and program == program_of[m.channel]
            ]
            assert min(abs(arrival - offset - end) for end in ends) < TOLERANCE, m
    assert not sounding
    assert {m.type for _, m in received} == {"program_change", "note_on", "note_off"}


def test_interrupt_silences_sounding_notes(runner, pty):
    master, device = pty
    process = subprocess.Popen(
        [str(runner), "--model", str(MODEL), "--tokens", "300", "--seed", "7"]
        + ["--midi-out", device, "--tempo", "240"],  # a quarter note is 0.25 s
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    received = read_messages(master, process, stop_after=0.2)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "sounding notes silenced" in stderr
    sounding = set()
    for _, m in received:
        if m.type == "note_on":
            sounding.add((m.channel, m.note))
        elif m.type == "note_off":
            sounding.discard((m.channel, m.note))
    assert any(m.type == "note_on" for _, m in received)
    assert not sounding


def test_midi_out_to_a_file_and_bad_paths(runner, tmp_path):
    out = tmp_path / "stream.bin"
    args = ["--model", str(MODEL), "--tokens", "100", "--seed", "3", "--tempo", "1000"]
    result = subprocess.run(
        [str(runner), *args, "--midi-out", str(out), "--events"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    parser = mido.Parser()
    parser.feed(out.read_bytes())
    messages = list(parser)
    assert sum(m.type == "note_on" for m in messages) == len(result.stdout.splitlines()) > 0

    bad = subprocess.run(
        [str(runner), *args, "--midi-out", str(tmp_path / "no" / "such" / "dir")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("sage-edge-run: --midi-out: cannot open")
