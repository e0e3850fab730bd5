"""Playing with a musician (sage_jam_* via sage_edge.live.Jam, sage-edge-run --midi-in and
sage-edge jam): the real engine and shipped model, a scripted musician playing the soprano of a
held-out chorale (bwv1.6, in the validation split), and, through ptys, real MIDI bytes."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest
from conftest import built_binary

import sage_edge
from sage_edge.live import (
    DRUM_CHANNEL,
    ByteRecorder,
    Jam,
    MidiEvent,
    midi_bytes,
    now_us,
    score_events,
    sleep_until,
)
from sage_edge.ports import delete_clients
from sage_edge.tokenizer import load_score, notated_bar_at

ROOT = Path(__file__).resolve().parent.parent
MUSICIAN, ENGINE = 52, [53, 54, 42]  # soprano; alto, tenor, cello
TICKS = 12  # the shipped model's grid per quarter


@pytest.fixture(scope="module")
def engine():
    return sage_edge.Engine()


def soprano(
    chorale_dir: Path, us_per_quarter: int, bars: int, piece: str = "bwv1.6.mid"
) -> list[MidiEvent]:
    """The soprano of bwv1.6 (held out of training), or of `piece`, as timed events, its first
    `bars` bars (of its own meters)."""
    score = load_score(chorale_dir / piece)
    score.tracks = [score.tracks[0]]
    end = notated_bar_at(score, 0).start
    for _ in range(bars):
        end = notated_bar_at(score, end).end
    score.tracks[0].notes = [n for n in score.tracks[0].notes if n.time < end]
    events, programs = score_events(score, us_per_quarter // score.ticks_per_quarter)
    assert programs == [MUSICIAN]
    return events


def decoded(engine, tokens):
    """(program, onset in ticks, pitch) of every note in a token stream."""
    score = engine.tokenizer.decode(tokens)
    tpq = score.ticks_per_quarter
    return [(t.program, n.time * TICKS // tpq, n.pitch) for t in score.tracks for n in t.notes]


def test_call_and_response_answers_in_the_answer_bars(engine, chorale_dir):
    """Phrases of 2 bars: the engine answers bars 2-3, 6-7, ... on its programs only, every note
    on the grid; the musician's phrase notes are in the stream, those played over an answer not."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 8)
    jam = Jam(
        engine,
        "call-response",
        programs=ENGINE,
        bars=2,
        musician_program=MUSICIAN,
        start_us=0,
        seed=3,
    )
    notes = list(jam.play(played))
    bar = 4 * quarter
    assert notes and jam.state["answers"] >= 2
    assert {n.time_us // bar % 4 for n in notes} <= {2, 3}
    assert {n.program for n in notes} <= set(ENGINE)
    assert all(jam.time_of(jam.tick_at(n.time_us)) == n.time_us for n in notes)  # on the grid
    heard = {(p, t, pitch) for p, t, pitch in decoded(engine, jam.history()) if p == MUSICIAN}
    bar_ticks = 4 * TICKS
    for e in played:
        if e.velocity == 0:
            continue
        tick = jam.tick_at(e.time_us)
        in_phrase = tick // bar_ticks % 4 in (0, 1)
        assert ((MUSICIAN, tick, e.pitch) in heard) == in_phrase, (tick, e.pitch)


def test_accompaniment_plays_every_bar_a_bar_behind(engine, chorale_dir):
    """lookahead=1: each of the musician's bars is written with the engine's parts between its
    notes; the engine's notes of bar b sound in bar b + 1."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 6)
    jam = Jam(
        engine,
        "accompany",
        programs=ENGINE,
        musician_program=MUSICIAN,
        lookahead=1,
        start_us=0,
        seed=3,
    )
    assert jam.options == {"lookahead": 1, "listen_ticks": 0, "react": False, "predict": False}
    notes = list(jam.play(played, until_us=7 * 4 * quarter))
    bar_ticks = 4 * TICKS
    stream = decoded(engine, jam.history())
    musician_bars = {t // bar_ticks for p, t, _ in stream if p == MUSICIAN}
    engine_bars = {t // bar_ticks for p, t, _ in stream if p in ENGINE}
    assert musician_bars <= engine_bars  # parts written into the musician's bars
    sounding_bars = {n.time_us // (4 * quarter) for n in notes}
    assert {b + 1 for b in musician_bars} <= sounding_bars
    assert 0 not in sounding_bars  # nothing before the first bar is known


def test_accompaniment_in_time_plays_each_bar_in_it(engine, chorale_dir):
    """Lookahead 0, reacting every beat: the engine's notes sound in the musician's bars (from bar
    1 on), on the grid; the stream holds the soprano where it was played and, in the bars replayed
    whole, exactly the engine's notes that were played."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 5)
    jam = Jam(
        engine,
        "accompany",
        programs=ENGINE,
        musician_program=MUSICIAN,
        lookahead=0,
        listen_ticks=TICKS,
        react=True,
        start_us=0,
        seed=3,
    )
    notes = list(jam.play(played, until_us=5 * 4 * quarter))
    bar_ticks = 4 * TICKS
    assert {n.tick // bar_ticks for n in notes} >= {1, 2, 3, 4}
    assert min(n.tick for n in notes) >= bar_ticks  # bar 0 is listened to only
    assert {n.program for n in notes} <= set(ENGINE)
    assert all(jam.time_of(n.tick) == n.time_us for n in notes)
    assert jam.state["replays"] >= 4 * 4
    stream = decoded(engine, jam.history())
    onsets = {(jam.tick_at(e.time_us), e.pitch) for e in played if e.velocity}
    assert {(t, p) for prog, t, p in stream if prog == MUSICIAN} == onsets
    written = sorted((t, p) for prog, t, p in stream if prog in ENGINE and t < 5 * bar_ticks)
    heard = sorted((n.tick, n.pitch) for n in notes if n.tick < 5 * bar_ticks)
    assert written == heard


# bwv269: a 4/4 bar (a two-quarter pickup), then 3/4 -- a real chorale whose meter changes. The
# musician's meter changes are given to the jam ahead (Jam.set_meter; --meter 4,1:3).
METER_PIECE = "bwv269.mid"


def meter_per_bar(engine, tokens) -> list[int]:
    """The quarters of each bar's TimeSig in a token stream, bar by bar."""
    table = engine.tokenizer.token_table()
    bars, after_bar = [], False
    for token in tokens:
        kind = engine.tokenizer.token_strings()[token].split("_")[0]
        if kind == "TimeSig" and after_bar:
            bars.append(int(table["a"][token]))
        after_bar = kind == "Bar"
    return bars


def bar_of(jam, tick: int) -> int:
    bar = 0
    while jam.bar(bar + 1)[0] <= tick:
        bar += 1
    return bar


def test_the_default_accompaniment_is_in_time_every_beat_reacting(engine, chorale_dir):
    """Jam and Engine.jam accompany by default as the engine does (sage_jam_options_default): in
    time, listening every beat, reacting; the same notes as asking for it. Call and response
    neither listens nor reacts."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 3)
    common = {"programs": ENGINE, "musician_program": MUSICIAN, "start_us": 0, "seed": 3}
    in_time = {"lookahead": 0, "listen_ticks": TICKS, "react": True, "predict": False}
    takes = []
    for jam in (
        Jam(engine, "accompany", **common),
        engine.jam("accompany", **common),
        Jam(engine, "accompany", **common, **in_time),
    ):
        assert jam.options == in_time
        takes.append((list(jam.play(played, until_us=4 * 4 * quarter)), jam.state["replays"]))
    assert takes[0][0] and takes[0][1] >= 2 * 4
    assert takes[0] == takes[1] == takes[2]
    answering = Jam(engine, "call-response", **common)
    assert answering.options == {**in_time, "listen_ticks": 0, "react": False}


def test_call_and_response_follows_a_meter_change(engine, chorale_dir):
    """bwv269's soprano in 2-bar phrases, 4/4 then 3/4 from bar 1: the bar table holds the 3/4
    bars, every bar of the stream (the musician's and the answers') has the table's TimeSig, the
    answers sound in their 3/4 bars, and the phrases' notes are in the stream where played."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 7, METER_PIECE)
    jam = Jam(
        engine,
        "call-response",
        programs=ENGINE,
        bars=2,
        musician_program=MUSICIAN,
        start_us=0,
        seed=3,
    )
    jam.set_meter(1, 3)
    assert [jam.bar(b) for b in range(4)] == [(0, 4), (48, 3), (84, 3), (120, 3)]
    assert jam.bar_time(2) == 7 * quarter
    notes = list(jam.play(played))
    assert notes and jam.state["answers"] >= 2
    stream = jam.history()
    meters = meter_per_bar(engine, stream)
    assert len(meters) >= 8 and meters == [4] + [3] * (len(meters) - 1)
    assert {bar_of(jam, jam.tick_at(n.time_us)) % 4 for n in notes} <= {2, 3}
    assert all(jam.time_of(jam.tick_at(n.time_us)) == n.time_us for n in notes)
    heard = {(p, t, pitch) for p, t, pitch in decoded(engine, stream) if p == MUSICIAN}
    for e in played:
        if e.velocity:
            tick = jam.tick_at(e.time_us)
            in_phrase = bar_of(jam, tick) % 4 in (0, 1)
            assert ((MUSICIAN, tick, e.pitch) in heard) == in_phrase, (tick, e.pitch)


@pytest.mark.parametrize("lookahead", [0, 1])
def test_accompaniment_follows_a_meter_change(engine, chorale_dir, lookahead):
    """bwv269's soprano accompanied in time (every beat, reacting) and a bar behind: every bar of
    the stream has the table's TimeSig, the soprano is in it where played, and the engine's notes
    sound in the musician's bars of the table (a bar later, one bar behind)."""
    quarter = 500_000
    played = soprano(chorale_dir, quarter, 5, METER_PIECE)
    options = {"lookahead": lookahead}
    if lookahead == 0:
        options.update(listen_ticks=TICKS, react=True)
    jam = Jam(
        engine,
        "accompany",
        programs=ENGINE,
        musician_program=MUSICIAN,
        start_us=0,
        seed=3,
        **options,
    )
    jam.set_meter(1, 3)
    notes = list(jam.play(played, until_us=jam.bar_time(6)))
    stream = jam.history()
    meters = meter_per_bar(engine, stream)
    assert len(meters) >= 5 and meters == [4] + [3] * (len(meters) - 1)
    onsets = {(jam.tick_at(e.time_us), e.pitch) for e in played if e.velocity}
    assert {(t, p) for prog, t, p in decoded(engine, stream) if prog == MUSICIAN} == onsets
    written_bars = {bar_of(jam, t) for prog, t, _ in decoded(engine, stream) if prog in ENGINE}
    sounding_bars = {bar_of(jam, n.tick) for n in notes}
    assert {b + lookahead for b in written_bars if b + lookahead < 6} <= sounding_bars
    assert all(jam.time_of(n.tick) == n.time_us for n in notes)
    if lookahead == 0:
        heard = sorted((n.tick, n.pitch) for n in notes if n.tick < jam.bar(5)[0])
        written = sorted(
            (t, p) for prog, t, p in decoded(engine, stream) if prog in ENGINE and t < jam.bar(5)[0]
        )
        assert written == heard


def test_meter_changes_are_checked(engine):
    jam = Jam(engine, "call-response", programs=ENGINE, start_us=0)
    with pytest.raises(ValueError, match="time signature 13/4|out of range"):
        jam.set_meter(2, 13)
    jam.set_meter(0, 3)  # bar 0 is open, nothing of it taken
    assert jam.bar(1) == (36, 3)


def test_in_time_options_are_checked(engine):
    with pytest.raises(ValueError, match="lookahead 0"):
        Jam(engine, "accompany", programs=ENGINE, lookahead=1, listen_ticks=12)
    with pytest.raises(ValueError, match="lookahead 0"):
        Jam(engine, "accompany", programs=ENGINE, lookahead=1, react=True)
    with pytest.raises(ValueError, match="lookahead 0"):
        Jam(engine, "call-response", programs=ENGINE, listen_ticks=12)
    with pytest.raises(ValueError, match="lookahead 0"):
        Jam(engine, "call-response", programs=ENGINE, lookahead=0, react=True)
    with pytest.raises(ValueError, match="below a bar"):
        Jam(engine, "accompany", programs=ENGINE, lookahead=0, listen_ticks=4 * TICKS)


class Receiver(ByteRecorder):
    """A pty's output side read in a thread, each read stamped; parsed into MIDI messages."""

    def messages(self):
        parser, out = mido.Parser(), []
        for t, data in self.chunks:
            parser.feed(data)
            out += [(t, m) for m in parser]
        return out


def play_through_ptys(
    command: list[str],
    tempo: float,
    bars: int,
    chorale_dir: Path,
    piece: str = "bwv1.6.mid",
    extra: list[tuple[int, bytes]] = (),
):
    """Starts a front end on two ptys, plays the soprano into the first at the times the front end
    announces (and the ``extra`` bytes at their times), and returns (bar 0's time, the front end's
    messages with arrival times, stderr, stdout)."""
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    quarter = round(60e6 / tempo)
    command = [*command, "--in" if "jam" in command else "--midi-in", os.ttyname(in_slave)]
    command += ["--out" if "jam" in command else "--midi-out", os.ttyname(out_slave)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        start = int(re.search(r"bar 0 at monotonic (\d+) us", line).group(1))
        receiver = Receiver(out_master)
        played = midi_bytes(soprano(chorale_dir, quarter, bars, piece))
        for t, data in sorted([*played, *extra], key=lambda item: item[0]):
            sleep_until(start + t, 2000)
            os.write(in_master, data)
        os.close(in_master)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.1)
    assert process.returncode == 0, err
    return start, receiver.messages(), line + err, out


def check_timing_and_programs(start, messages, quarter, bar_set=None):
    tick = quarter / TICKS
    ons = [(t, m) for t, m in messages if m.type == "note_on" and m.velocity > 0]
    assert len(ons) > 10
    # Arrival on the grid: the runner sends at the grid time; the pty and this reader add little.
    errors = sorted(abs((t - start) / tick - round((t - start) / tick)) * tick for t, _ in ons)
    assert errors[len(errors) // 2] < 2000 and errors[-1] < 15000, errors[-5:]
    programs = {m.channel: m.program for _, m in messages if m.type == "program_change"}
    assert set(programs.values()) <= set(ENGINE)
    assert all(m.channel in programs or m.channel == DRUM_CHANNEL for _, m in ons)
    bars = {round((t - start) / tick) // (4 * TICKS) for t, _ in ons}
    if bar_set is not None:
        assert bars <= bar_set, bars
    return bars


def test_runner_answers_through_ptys(chorale_dir):
    runner = built_binary("csrc/runner/sage-edge-run")
    tempo = 300
    command = [
        str(runner),
        "--model",
        str(ROOT / "sage_edge/models/default.sage"),
        "--mode",
        "call-response",
        "--bars",
        "2",
        "--programs",
        "53,54,42",
        "--musician-program",
        "52",
        "--tempo",
        str(tempo),
        "--seed",
        "1",
    ]
    start, messages, err, _ = play_through_ptys(command, tempo, 6, chorale_dir)
    bars = check_timing_and_programs(start, messages, 60e6 / tempo, {2, 3, 6, 7})
    assert {2, 6} <= bars or {3, 7} <= bars, bars
    assert "2 answers" in err


def front_end_command(mode: str, front_end: str, tempo: float, *options: str) -> list[str]:
    """The command line of a front end (sage-edge-run or sage-edge jam) playing in ``mode``: the
    engine on 53, 54, 42 with the musician's 52, seed 1, and ``options``."""
    if front_end == "runner":
        command = [str(built_binary("csrc/runner/sage-edge-run"))]
        command += ["--model", str(ROOT / "sage_edge/models/default.sage")]
    else:
        command = [sys.executable, "-m", "sage_edge.cli", "jam"]
    command += ["--mode", mode, "--programs", "53,54,42", "--musician-program", "52"]
    return [*command, "--tempo", str(tempo), "--seed", "1", *options]


@pytest.mark.parametrize(
    "front_end, way_in", [("runner", "option"), ("runner", "sysex"), ("cli", "option")]
)
def test_front_ends_follow_a_meter_change_through_ptys(chorale_dir, front_end, way_in):
    """Call and response in 2-bar phrases on bwv269's soprano, 3/4 from bar 1 by --meter 4,1:3 or
    by a time signature SysEx (3/4, delayed) the musician's port sends in bar 0: the answers'
    notes sound in the 3/4 answer bars (bars 2-3 and 6-7 of the table)."""
    tempo = 300
    quarter = round(60e6 / tempo)
    sysex = bytes([0xF0, 0x7F, 0x7F, 0x03, 0x42, 4, 3, 2, 24, 8, 0xF7])
    meter = "4,1:3" if way_in == "option" else "4"
    command = front_end_command("call-response", front_end, tempo, "--bars", "2", "--meter", meter)
    extra = [(quarter, sysex)] if way_in == "sysex" else []
    start, messages, err, _ = play_through_ptys(command, tempo, 7, chorale_dir, METER_PIECE, extra)
    ons = [t for t, m in messages if m.type == "note_on" and m.velocity > 0]
    assert len(ons) > 10 and "answers" in err
    ticks = [round((t - start) / (quarter / TICKS)) for t in ons]
    bars = {0 if t < 4 * TICKS else 1 + (t - 4 * TICKS) // (3 * TICKS) for t in ticks}
    assert bars <= {2, 3, 6, 7} and 2 in bars, bars


def test_runner_refuses_a_meter_the_model_has_not():
    runner = built_binary("csrc/runner/sage-edge-run")
    model = str(ROOT / "sage_edge/models/default.sage")
    for meter in ("4,1:13", "4,x:3"):
        result = subprocess.run(
            [
                str(runner),
                "--model",
                model,
                "--midi-in",
                "/dev/null",
                "--midi-out",
                "/dev/null",
                "--programs",
                "42",
                "--meter",
                meter,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "--meter" in result.stderr, result.stderr


def test_runner_accompanies_a_bar_behind_through_ptys(chorale_dir):
    """sage-edge-run --lookahead 1: the soprano's bars 0-3 accompanied in bars 1-4."""
    tempo = 300
    command = front_end_command("accompany", "runner", tempo, "--lookahead", "1")
    start, messages, err, _ = play_through_ptys(command, tempo, 4, chorale_dir)
    assert "accompanying 1 bar(s) behind" in err.splitlines()[0]
    bars = check_timing_and_programs(start, messages, 60e6 / tempo)
    assert {1, 2, 3, 4} <= bars


def test_runner_accompanies_in_time_through_ptys(chorale_dir):
    """sage-edge-run --lookahead 0 --listen-ticks 12 --no-react (ahead of each beat): the
    engine's notes sound in the bars the soprano plays, from bar 1, on the grid: each beat's
    decision has half a grid step before it (20.8 ms at 120 BPM)."""
    tempo = 120
    # --bars 1: the tail after the input ends
    options = ["--bars", "1", "--lookahead", "0", "--listen-ticks", str(TICKS), "--no-react"]
    start, messages, err, _ = play_through_ptys(
        front_end_command("accompany", "runner", tempo, *options), tempo, 3, chorale_dir
    )
    assert f"in time, listening every {TICKS} ticks, deciding ahead" in err.splitlines()[0]
    bars = check_timing_and_programs(start, messages, 60e6 / tempo)
    assert {1, 2} <= bars and 0 not in bars


@pytest.mark.parametrize(
    "front_end, options",
    [
        ("runner", []),
        ("cli", []),
        ("cli", ["--lookahead", "0", "--listen-ticks", str(TICKS), "--react"]),
    ],
)
def test_front_ends_accompany_in_time_reacting_by_default(chorale_dir, front_end, options):
    """sage-edge-run and sage-edge jam --mode accompany with no other option (the engine's
    defaults), or sage-edge jam asking for the same: in time, listening every beat, reacting. The
    engine's notes go out in the soprano's bars, on a grid tick or, at a beat, soon after the
    soprano's note there (the reaction, a few ms in process: benchmarks/accompaniment_quality.py;
    the bound here leaves room for this shared host's load)."""
    tempo = 100  # a grid step of 50 ms
    options = ["--bars", "1", *options]  # --bars 1: the tail after the input ends
    start, messages, err, _ = play_through_ptys(
        front_end_command("accompany", front_end, tempo, *options), tempo, 3, chorale_dir
    )
    line = err.splitlines()[0]
    assert line.endswith(f"accompanying in time, listening every {TICKS} ticks, reacting"), line
    tick = 60e6 / tempo / TICKS
    ons = [(t, m) for t, m in messages if m.type == "note_on" and m.velocity > 0]
    assert len(ons) > 10
    after = sorted((t - start) % tick for t, _ in ons)  # since the grid tick before
    assert after[len(after) // 2] < 40_000, after
    bars = {int((t - start) // tick) // (4 * TICKS) for t, _ in ons}
    assert {1, 2} <= bars and 0 not in bars


def test_cli_jam_records_the_musicians_notes(tmp_path, chorale_dir, engine):
    """sage-edge jam through ptys: the answer's bytes, and a recording of the stream holding
    the musician's phrase notes where they were played."""
    tempo = 300
    record = tmp_path / "jam.mid"
    command = front_end_command("call-response", "cli", tempo, "--bars", "2")
    start, messages, _, _ = play_through_ptys(
        [*command, "--record", str(record)], tempo, 2, chorale_dir
    )
    check_timing_and_programs(start, messages, 60e6 / tempo, {2, 3})
    check_recorded_musician(record, chorale_dir, tempo, 2)


def test_cli_jam_keeps_a_key_sounding_until_its_last_note_ends(chorale_dir):
    """sage-edge jam through ptys (Jam.serve): when the engine plays two notes of one pitch on one
    channel, the second struck while the first sounds and ending after it, the key's note-off goes
    out when the last of them ends, never while one still sounds (the engine's MIDI scheduler,
    docs/jam.md "Playing the notes"). The tiny model accompanies a bar behind with every part held
    to middle C, so that such notes come often. Before, Jam.serve's own queue sent the first
    note's note-off at its end and cut the second short."""
    tempo = 300
    parts = ",".join(f"{program}:60-60" for program in (53, 54, 42))
    options = ["--model", str(ROOT / "tests/data/tiny_q8_0.sage"), "--bars", "1"]
    options += ["--lookahead", "1", "--range", parts, "--events"]
    command = front_end_command("accompany", "cli", tempo, *options)
    start, messages, _, out = play_through_ptys(command, tempo, 2, chorale_dir)
    decided = {}  # (program, pitch): [(tick, end tick)] as the engine decided them, in order
    for f in map(str.split, out.splitlines()):
        on, length = round(float(f[0]) * TICKS), round(float(f[1]) * TICKS)
        decided.setdefault((int(f[4]), int(f[2])), []).append((on, on + length))
    overlaps = [
        (key, a, b)
        for key, notes in decided.items()
        for i, a in enumerate(notes)
        for b in notes[i + 1 :]
        if a[0] <= b[0] < a[1] < b[1]
    ]
    assert len(overlaps) > 2, decided
    # Each note-off of a key ends every note of it struck before: none of them is decided to
    # sound on after it (half a grid step allowed: it arrives a little after its time).
    tick = 60e6 / tempo / TICKS
    program_of, ons, sounding, cut = {}, {}, {}, []
    for t, m in messages:
        if m.type == "program_change":
            program_of[m.channel] = m.program
        elif m.type in ("note_on", "note_off"):
            key = (program_of[m.channel], m.note)
            if m.type == "note_on" and m.velocity > 0:
                ons[key] = ons.get(key, 0) + 1
                sounding.setdefault(key, []).append(decided[key][ons[key] - 1])
            else:
                notes = sounding.pop(key, [])
                if max((end for _, end in notes), default=-1) > (t - start) / tick + 0.5:
                    cut.append((key, (t - start) / tick, notes))
    assert ons == {key: len(notes) for key, notes in decided.items()}
    assert not cut, cut


def check_recorded_musician(record: Path, chorale_dir: Path, tempo: float, bars: int) -> None:
    """The recording of a jam holds the soprano's first ``bars`` bars, as the musician's
    program, where they were played."""
    recorded = mido.MidiFile(record)
    tpq = recorded.ticks_per_beat
    heard, programs = [], {}
    for track in recorded.tracks:
        t = 0
        for m in track:
            t += m.time
            if m.type == "program_change":
                programs[m.channel] = m.program
            if m.type == "note_on" and m.velocity > 0 and programs.get(m.channel) == MUSICIAN:
                heard.append((round(t * TICKS / tpq), m.note))
    quarter = round(60e6 / tempo)
    played = [
        (round(e.time_us * TICKS / quarter), e.pitch)
        for e in soprano(chorale_dir, quarter, bars)
        if e.velocity
    ]
    # Played by a script sleeping in Python: within one grid step of where it was meant.
    assert len(heard) == len(played)
    for (t, pitch), (want_t, want_pitch) in zip(sorted(heard), sorted(played), strict=True):
        assert pitch == want_pitch and abs(t - want_t) <= 1


def parsed(received: list[tuple[int, bytes]]) -> list[tuple[int, mido.Message]]:
    """MIDI messages with the arrival of the bytes that completed each."""
    parser, messages = mido.Parser(), []
    for t, data in received:
        parser.feed(data)
        messages += [(t, m) for m in parser]
    return messages


def left_sounding(messages) -> set[tuple[int, int]]:
    """The (channel, key) of the notes a stream of messages leaves sounding."""
    sounding = set()
    for _, m in messages:
        if m.type in ("note_on", "note_off"):
            key = (m.channel, m.note)
            (sounding.add if m.type == "note_on" and m.velocity else sounding.discard)(key)
    return sounding


def test_cli_jam_answers_over_jack_ports(tmp_path, chorale_dir, jack_server):
    """sage-edge jam --in NAME --out NAME on named ports of a JACK server (sage_edge.ports, the
    ports extra): a scripted musician's JACK port plays the soprano's first 2 bars into the jam,
    which answers on another JACK port that this test listens to; the same checks as through
    ptys (the answer's bytes on the grid in the answer bars; the musician's notes recorded where
    played). A named port never ends, so the jam is stopped with Ctrl-C (SIGINT), in the middle
    of the answer's last bar: no note is left sounding, and the counts are printed."""
    rtmidi, tempo = jack_server, 300
    received = []  # (arrival, bytes), stamped on rtmidi's thread as it delivers each message
    musician = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="musician")
    musician.open_virtual_port("soprano")
    ears = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="listener")
    ears.set_callback(lambda event, _: received.append((now_us(), bytes(event[0]))))
    ears.open_virtual_port("ears")
    record = tmp_path / "jam.mid"
    command = front_end_command("call-response", "cli", tempo, "--bars", "2")
    # The input by its exact name, the output by a part of its name (listener:ears).
    command += ["--in", "musician:soprano", "--out", "ears", "--record", str(record)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "listening on musician:soprano" in line, line + process.stderr.read()
        start = int(re.search(r"bar 0 at monotonic (\d+) us", line).group(1))
        quarter = round(60e6 / tempo)
        for e in soprano(chorale_dir, quarter, 2):  # whole messages: a port takes no running status
            sleep_until(start + e.time_us, 2000)
            musician.send_message([0x90 | e.channel, e.pitch, e.velocity])
        # The answer sounds in bars 2-3; stop it in the middle of its last bar's third beat.
        sleep_until(start + round(3 * 4 * quarter + 2.5 * quarter))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        delete_clients(musician, ears)  # a port closed just after a client went crashed libjack
    assert process.returncode == 0, err
    messages = parsed(received)
    check_timing_and_programs(start, messages, 60e6 / tempo, {2, 3})
    check_recorded_musician(record, chorale_dir, tempo, 2)
    # Stopped, the jam ended the notes sounding (the answer's third beat) and counted the
    # musician's 7 notes.
    assert not left_sounding(messages)
    assert "sage-edge: heard 7 notes, played " in err and "(1 answers)" in err, err


def test_cli_jam_ends_when_jack_stops_answering(tmp_path, jack_server, jack_server_process):
    """Ending a jam does not hang when its MIDI system stops answering: closing a named JACK port
    waits for the server's answer with no time limit, with python-rtmidi holding Python's
    interpreter lock, so with the server stopped (SIGSTOP: a server that hangs) Ctrl-C left
    sage-edge jam in the output's close_port for good. The recording and the counts are written
    before the ports are closed, and the process ends once closing has taken
    sage_edge.ports.CLOSE_LIMIT_S (3 s here): exit status 1, with every thread's stack."""
    rtmidi = jack_server
    musician = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="musician")
    musician.open_virtual_port("soprano")
    ears = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="listener")  # queued, unread (no callback)
    ears.open_virtual_port("ears")
    record = tmp_path / "jam.mid"
    jam = front_end_command("call-response", "cli", 300, "--bars", "2")[3:]  # from "jam" on
    jam += ["--in", "musician:soprano", "--out", "ears", "--record", str(record)]
    run = (
        "import sys; import sage_edge.ports; sage_edge.ports.CLOSE_LIMIT_S = 3; "
        "from sage_edge.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    process = subprocess.Popen([sys.executable, "-c", run, *jam], stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        line = process.stderr.readline()
        assert "listening on musician:soprano" in line, line + process.stderr.read()
        musician.send_message([0x90, 72, 80])
        time.sleep(0.2)
        musician.send_message([0x80, 72, 0])
        time.sleep(0.3)
        os.kill(jack_server_process.pid, signal.SIGSTOP)
        stopped = True
        process.send_signal(signal.SIGINT)
        begun = time.monotonic()
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - begun
    finally:
        if stopped:
            os.kill(jack_server_process.pid, signal.SIGCONT)
        if process.poll() is None:
            process.kill()
            process.wait()
        delete_clients(musician, ears)
    assert process.returncode == 1, err
    assert "sage-edge: heard 1 notes" in err and "Timeout (0:00:03)!" in err, err
    assert "in close_or_exit" in err, err  # where it waited (the main thread's stack)
    assert took < 3 + 10, took
    recorded = []  # the musician's notes in the recording
    for track in mido.MidiFile(record).tracks:
        programs = {}
        for m in track:
            if m.type == "program_change":
                programs[m.channel] = m.program
            if m.type == "note_on" and m.velocity > 0 and programs.get(m.channel) == MUSICIAN:
                recorded.append(m.note)
    assert recorded == [72], err


class Lines:
    """A process's stderr read line by line on a thread, for a test to wait for a line."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no line with {text!r} in {timeout} s: {''.join(self.lines)}")

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


def test_cli_jam_reconnects_named_ports_that_come_back(chorale_dir, jack_server):
    """sage-edge jam on named JACK ports whose clients go away mid-jam and come back: the
    musician's client leaves after the first phrase, the listener's in the middle of the answer;
    each is said lost, and back when a client of that name returns. The jam keeps its clock and
    session: the second phrase, played in bars 6-7 by the returned musician, is heard and answered
    in bars 8-9 on the returned listener's port (which also gets the rest of the first answer),
    first the channels' programs again; by the end no note is left sounding on it. The counts say
    one loss and return of each."""
    rtmidi, tempo = jack_server, 300
    quarter = round(60e6 / tempo)
    bar = 4 * quarter
    received = []  # the returned listener's messages: (arrival, bytes)

    def musician():
        port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="musician")
        port.open_virtual_port("soprano")
        return port

    def listener(into=None):
        # The first listener queues what it gets, unread: deleted while a callback of python-rtmidi
        # would run on JACK's thread, its client's close waits for that callback, which waits for
        # the interpreter lock that the deleting thread holds.
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="listener")
        if into is not None:
            port.set_callback(lambda event, _: into.append((now_us(), bytes(event[0]))))
        port.open_virtual_port("ears")
        return port

    keys, ears = musician(), listener()
    command = front_end_command("call-response", "cli", tempo, "--bars", "2")
    command += ["--in", "musician:soprano", "--out", "ears"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "listening on musician:soprano" in line, line + process.stderr.read()
        start = int(re.search(r"bar 0 at monotonic (\d+) us", line).group(1))
        err = Lines(process.stderr)
        phrase = soprano(chorale_dir, quarter, 2)

        def play(offset_us):
            for e in phrase:
                sleep_until(start + offset_us + e.time_us, 2000)
                keys.send_message([0x90 | e.channel, e.pitch, e.velocity])

        play(0)
        sleep_until(start + round(2.25 * bar))
        keys.delete()
        err.wait_for("MIDI input musician:soprano lost")
        sleep_until(start + round(2.5 * bar))  # in the answer's first bar
        ears.delete()
        err.wait_for("MIDI output listener:ears lost")
        sleep_until(start + 3 * bar)
        keys = musician()
        err.wait_for("MIDI input musician:soprano back")
        ears = listener(received)
        err.wait_for("MIDI output listener:ears back")
        play(6 * bar)
        sleep_until(start + round(10.25 * bar))
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, err.text()
    finally:
        if process.poll() is None:
            process.kill()
        delete_clients(keys, ears)
    said = err.text()
    assert "sage-edge: heard 14 notes, played " in said and "(2 answers)" in said, said
    assert "MIDI input lost 1 times, back 1; MIDI output lost 1 times, back 1" in said, said
    messages = parsed(received)
    ons = [i for i, (_, m) in enumerate(messages) if m.type == "note_on" and m.velocity > 0]
    assert ons, said
    programs = {m.channel for _, m in messages[: ons[0]] if m.type == "program_change"}
    assert {m.channel for _, m in messages if m.type == "note_on"} <= programs
    # The first answer's notes from its return on (bar 3), and the second answer's.
    bars = check_timing_and_programs(start, messages, quarter, {3, 8, 9})
    assert {8, 9} & bars, bars
    assert not left_sounding(messages)


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_reopen_a_device_path_that_comes_back(tmp_path, chorale_dir, front_end):
    """--reconnect on a device path: a udev-style symlink to the musician's pty, removed when the
    musician's side closes after the first phrase (the input's EIO, as a USB MIDI device unplugged
    gives ENODEV) and later pointing at a new pty. The front end says the input lost, goes on
    with the answer, reopens the path when it is back, and answers the phrase played then; the
    counts say one loss and one return."""
    tempo = 300
    quarter = round(60e6 / tempo)
    bar = 4 * quarter
    link = tmp_path / "midiC1D0"

    def plug():  # a new pty behind the path, as udev links a device plugged in again
        master, slave = pty.openpty()
        name = os.ttyname(slave)
        os.close(slave)  # the node stays while the master is open
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        return master

    keys = plug()
    out_master, out_slave = pty.openpty()
    command = front_end_command("call-response", front_end, tempo, "--bars", "2", "--reconnect")
    jam = front_end == "cli"
    command += ["--in" if jam else "--midi-in", str(link)]
    command += ["--out" if jam else "--midi-out", os.ttyname(out_slave)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        start = int(re.search(r"bar 0 at monotonic (\d+) us", line).group(1))
        err = Lines(process.stderr)
        receiver = Receiver(out_master)
        played = midi_bytes(soprano(chorale_dir, quarter, 2))

        def play(offset_us):
            for t, data in played:
                sleep_until(start + offset_us + t, 2000)
                os.write(keys, data)

        play(0)
        sleep_until(start + round(2.25 * bar))
        link.unlink()  # unplugged
        os.close(keys)
        err.wait_for(f"MIDI input {link} lost")
        sleep_until(start + 3 * bar)
        keys = plug()
        err.wait_for(f"MIDI input {link} back")
        play(6 * bar)
        sleep_until(start + round(10.25 * bar))
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == (0 if jam else 130), err.text()
    finally:
        if process.poll() is None:
            process.kill()
        os.close(keys)
    said = err.text()
    assert "heard 14 notes" in said and "2 answers" in said, said
    assert "MIDI input lost 1 times, back 1" in said, said
    time.sleep(0.1)
    bars = check_timing_and_programs(start, receiver.messages(), quarter, {2, 3, 8, 9})
    assert {8, 9} & bars and {2, 3} & bars, bars


def test_controls_apply_to_the_engines_parts(engine, chorale_dir):
    """A pitch range for the cello holds in every answer; the musician's notes are not masked."""
    played = soprano(chorale_dir, 500_000, 8)
    jam = Jam(
        engine,
        "call-response",
        programs=[42],
        bars=2,
        musician_program=MUSICIAN,
        start_us=0,
        seed=5,
        controls={"range": "42:48-55"},
    )
    notes = list(jam.play(played))
    assert notes and all(48 <= n.pitch <= 55 for n in notes)
    heard = [p for p, _, pitch in decoded(engine, jam.history()) if p == MUSICIAN]
    assert len(heard) > 10


def test_an_answer_is_generated_a_short_step_a_poll(engine):
    """While an answer is being generated, each poll does one short step (so a front end reads
    its input between) and the jam says so (generating: poll again at once); the musician's
    phrase was fed as its notes became final, so the phrase end feeds only what was left."""
    jam = Jam(engine, "call-response", programs=[42], bars=1, musician_program=52, start_us=0)
    quarter = 500_000
    for beat, pitch in enumerate([60, 62, 64]):
        jam.note(beat * quarter, 0, pitch, 90)
        jam.note(beat * quarter + 400_000, 0, pitch, 0)
    for t in range(0, 4 * quarter - 30_000, 1000):
        jam.poll(t)
    before = jam.state["tokens"]  # Bar, TimeSig and the three notes are in
    assert before >= 1 + 2 + 3 * 5 and not jam.state["answering"]
    jam.poll(4 * quarter - 20_000)  # the last grid point has passed: the phrase ends
    assert jam.state["answering"] and jam.state["tokens"] - before <= 1 + 2  # its Bar + a step
    polls = 0
    while jam.state["generating"]:
        before = jam.state["tokens"]
        jam.poll(4 * quarter - 20_000)
        polls += 1
        assert jam.state["tokens"] - before <= 2
    assert polls > 3


def port_options(command: list[str], midi_in: str, midi_out: str) -> list[str]:
    """``command`` (:func:`front_end_command`) playing from ``midi_in`` to ``midi_out``, under
    its front end's flag names."""
    cli = "jam" in command
    return [
        *command,
        "--in" if cli else "--midi-in",
        midi_in,
        "--out" if cli else "--midi-out",
        midi_out,
    ]


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_follow_a_drifting_clock(front_end):
    """A MIDI clock at 240 BPM drifting by +-2 % (Start, then 24 pulses per quarter note) with
    the musician's notes on its pulses, written by its own process (benchmarks/clock_follow.py's
    scenario), into sage-edge-run or sage-edge jam --clock in: the answers' note-ons go out on
    the pulses of their grid ticks, never before."""
    from benchmarks import clock_follow

    runner = built_binary("csrc/runner/sage-edge-run") if front_end == "runner" else "cli"
    late, _, _, _ = clock_follow.run_once(runner, seed=2)
    assert len(late) > 5
    # Each note-on goes out once the pulse of its tick has come (never early: a schedule on our
    # own clock would run ahead of a slow clock), and soon after it. The 1 ms p99 of the issue
    # holds on a quiet machine only; this shared one adds milliseconds of wake-up delay on both
    # sides of the ptys (docs/jam.md, "Clock"), so the bound checked is half a pulse at the median.
    late = sorted(late)
    assert late[0] >= 0
    assert late[len(late) // 2] < 5000, late


def play_with_a_clock(front_end: str, schedule: list[tuple[int, list[int]]], clock: str = "in"):
    """``front_end`` (sage-edge-run or sage-edge jam) following the input's clock (--clock in), or
    leading one (``clock="out"``), call and response in 1-bar phrases of 2/4 at 240 BPM, on two
    ptys; writes ``schedule``'s bytes at their times (microseconds from its bar 0). Returns when
    each write began, the notes the engine decided as (grid tick, pitch) (--events), its messages
    out with their arrival times, and its stderr."""
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    command = front_end_command(
        "call-response", front_end, 240, "--bars", "1", "--meter", "2", "--clock", clock, "--events"
    )
    command = port_options(command, os.ttyname(in_slave), os.ttyname(out_slave))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = int(re.search(r"bar 0 at monotonic (\d+) us", process.stderr.readline()).group(1))
        receiver = Receiver(out_master)
        written = []
        for t, data in schedule:
            sleep_until(start + t, 2000)
            written.append(now_us())
            os.write(in_master, bytes(data))
        os.close(in_master)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.1)
    assert process.returncode == 0, err
    decided = [
        (round(float(f[0]) * TICKS), int(f[2])) for f in map(str.split, out.splitlines()) if f
    ]
    return written, decided, receiver.messages(), err


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_start_a_late_clock_after_what_was_played(front_end):
    """--clock in with Start coming after the musician has played (docs/jam.md, "Clock"), into
    sage-edge-run or sage-edge jam. Before any clock, the front end's own runs (240 BPM, 2/4,
    1-bar phrases): a phrase in its bar 0 is
    answered in bar 1, when no clock ran, so that answer is never played; a note in bar 3 just
    before Start closes bar 3 as played, and Start's first pulse is bar 4's downbeat, where the
    engine answers it. Every note-on that goes out is one decided for a tick from that downbeat
    on, and none goes out before the pulses."""
    quarter = 250_000
    played = [(0, [0x90, 60, 90]), (200_000, [0x90, 60, 0])]  # bar 0, on the runner's clock
    played += [(250_000, [0x90, 62, 90]), (450_000, [0x90, 62, 0])]
    played += [(1_750_000, [0x90, 64, 90]), (1_850_000, [0x90, 64, 0])]  # bar 3, beat 2
    played += [(1_900_000, [0xFA])]  # Start, in bar 3
    pulses = [(1_900_000 + round((p + 1) * quarter / 24), [0xF8]) for p in range(4 * 48)]
    written, decided, messages, _ = play_with_a_clock(front_end, played + pulses)
    first_pulse = written[len(played)]
    downbeat, last_pulse_tick = 4 * 2 * TICKS, 4 * 2 * TICKS + 4 * 2 * TICKS - 1
    assert any(2 * TICKS <= tick < 4 * TICKS for tick, _ in decided), decided  # bar 1's answer
    assert any(downbeat <= tick < downbeat + 2 * TICKS for tick, _ in decided), decided
    ons = [(t, m) for t, m in messages if m.type == "note_on" and m.velocity > 0]
    assert all(t >= first_pulse for t, _ in ons)
    assert sorted(m.note for _, m in ons) == sorted(
        pitch for tick, pitch in decided if downbeat <= tick <= last_pulse_tick
    )


@pytest.mark.parametrize("pointer", ["stopped", "running"])
@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_stop_continue_and_move_with_the_clock(front_end, pointer):
    """--clock in through ptys into sage-edge-run or sage-edge jam, call and response in 1-bar
    phrases of 2/4 at 240 BPM (docs/jam.md, "Stop, Continue, Song Position Pointer"). The master
    starts at once and sends its pulses on while stopped too. A phrase in bar 0 is answered in bar
    1; Stop, half a grid step after beat 2 of bar 1 (tick 32): the notes sounding are released,
    no note goes out while it stands (a second), and the note the musician plays then is not
    heard; Continue: the answer goes on from tick 33. A phrase in bar 2 is answered in bar 3; Stop
    at tick 80, a Song Position Pointer to the song's start, Continue: the music goes on at the
    first downbeat after it, bar 4 (the rest of bar 3's answer is not played), where a phrase is
    answered in bar 5. The note-ons out are exactly the notes decided for ticks 0-80 and from 96
    on. Before, the grid ran on through the pauses (two bars a second), the notes sounding at Stop
    sounded on, the note played stopped was heard, and the pointer counted from bar 0. With
    ``pointer="running"`` the master sends the pointer at tick 80 without stopping (a locate while
    playing) and goes on: the same as Stop, pointer, Continue (before, it was ignored, and the
    engine played on in bar 3 while the master was in its bar 0)."""
    pulse = 250_000 / 24
    schedule, marks = [], {}
    clock = [100_000.0]

    def at(dt, data, mark=None):
        clock[0] += dt
        if mark:
            marks[mark] = len(schedule)
        schedule.append((round(clock[0]), data))

    def run(pulses, notes):  # `notes`: {pulse of this run: (pitch, velocity)}, after the pulse
        for k in range(pulses):
            at(pulse, [0xF8])
            if k in notes:
                at(0, [0x90, *notes[k]])

    def phrase(first, pitches):  # two quarter notes from pulse `first`, released a little early
        return {
            first + q * 24 + d: (pitch, 0 if d else 90)
            for q, pitch in enumerate(pitches)
            for d in (0, 20)
        }

    at(0, [0xFA])
    run(66, phrase(0, (67, 69)))  # bar 0 (pulses 0-47), into bar 1 to pulse 65 (tick 32.5)
    at(3000, [0xFC], "stop")
    for k in range(96):  # a second stopped: the master's pulses go on; a note is played
        at(pulse, [0xF8])
        if k in (30, 50):
            at(0, [0x90, 72, 90 if k == 30 else 0])
    at(3000, [0xFB], "continue")
    run(96, phrase(96 - 66, (67, 71)))  # pulses 66-161: bar 1's rest, bar 2, bar 3 to tick 80
    if pointer == "stopped":
        at(3000, [0xFC])
        for k in range(58):
            at(pulse, [0xF8])
            if k == 29:
                at(0, [0xF2, 0, 0])  # Song Position Pointer: the song's start
        at(3000, [0xFB])
    else:
        at(3000, [0xF2, 0, 0])  # the song's start, while the clock runs
    run(108, phrase(0, (67, 64)))  # bar 4 (the song's bar 0 again), bar 5, into bar 6
    last_pulse_tick = 96 + 107 // 2

    written, decided, messages, err = play_with_a_clock(front_end, schedule)
    stop, resume = written[marks["stop"]], written[marks["continue"]]
    assert any(81 <= tick < 96 for tick, _ in decided), decided  # bar 3's answer after the stop
    ons = [(t, m) for t, m in messages if m.type == "note_on" and m.velocity > 0]
    assert sorted(m.note for _, m in ons) == sorted(
        pitch for tick, pitch in decided if tick <= 80 or 96 <= tick <= last_pulse_tick
    )
    assert any(t < stop for t, _ in ons) and any(t > resume for t, _ in ons)
    assert not [m for t, m in ons if stop < t < resume], "a note went out while stopped"
    # Every note that sounded at Stop was released before Continue: none waited for it.
    sounding = {}
    for t, m in messages:
        if t < resume and m.type in ("note_on", "note_off"):
            key = (m.channel, m.note)
            sounding[key] = sounding.get(key, 0) + (m.type == "note_on" and m.velocity > 0) * 2 - 1
    assert all(v <= 0 for v in sounding.values()), sounding
    assert "heard 6 notes" in err, err  # not the one played while stopped


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_play_at_real_time_priority(front_end):
    """--rt-priority N: sage-edge-run or sage-edge jam playing with a musician runs at SCHED_FIFO
    priority N once it has announced bar 0 (or, without the right to it, warns and plays at
    normal priority)."""
    in_master, in_slave = pty.openpty()
    out_master, out_slave = pty.openpty()
    command = front_end_command(
        "call-response", front_end, 600, "--bars", "1", "--rt-priority", "3"
    )
    command = port_options(command, os.ttyname(in_slave), os.ttyname(out_slave))
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert "bar 0 at monotonic" in process.stderr.readline()
        time.sleep(0.2)
        # /proc/PID/stat: rt_priority and policy are the 40th and 41st fields (after "(comm)").
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        os.close(in_master)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    os.close(out_master)
    assert process.returncode == 0, err
    if "real-time priority 3 refused" not in err:
        assert (int(fields[37]), int(fields[38])) == (3, os.SCHED_FIFO), fields[37:39]


def test_clock_options_are_checked(engine):
    """A jam's clock is its own, the input's (in) or led on the output (out); sage-edge jam
    refuses other values and a real-time priority above 99 on one line, exit status 2, as
    sage-edge-run does."""
    with pytest.raises(ValueError, match="clock must be one of in, out or None"):
        Jam(engine, "call-response", programs=ENGINE, clock="both")
    for options, message in (
        (["--clock", "both"], "invalid choice: 'both'"),
        (["--rt-priority", "100"], "sage-edge: --rt-priority needs an integer in 0..99, got 100"),
    ):
        command = front_end_command("call-response", "cli", 120, *options)
        result = subprocess.run(
            port_options(command, "/dev/null", "/dev/null"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and message in result.stderr.splitlines()[-1], result.stderr


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_lead_the_clock_through_the_tail_and_stop(tmp_path, front_end):
    """--clock out (sage-edge-run or sage-edge jam, both through the engine's jam player): Start,
    24 pulses per quarter note, and Stop at the end. The input (/dev/null) ends at once, in bar
    0; with 1-bar phrases the jam plays on until bar 0 + 2 + 1 + 2 = 5 starts, by the bar table:
    bars 0 and 1 of 1/4, then 3/4 (--meter 1,2:3), so 11 quarters, pulses 0 to 264 (the last on
    the tail's end; the next is due 1/24 quarter later). Before, the runner waited 5 of its
    longest bars (15 quarters) and Jam.serve the first 5 bars of the table wherever the input
    ended, and neither sent Stop."""
    out = tmp_path / "clock.midi"
    command = front_end_command(
        "call-response", front_end, 600, "--bars", "1", "--meter", "1,2:3", "--clock", "out"
    )
    result = subprocess.run(
        port_options(command, "/dev/null", str(out)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:2] == bytes([0xFA, 0xF8]) and data[-1] == 0xFC, data[-4:]
    assert set(data[1:-1]) == {0xF8}
    # A late wake-up on this shared host may send one or two pulses more before it closes.
    assert 11 * 24 + 1 <= data.count(0xF8) <= 11 * 24 + 3, data.count(0xF8)


@pytest.mark.parametrize("front_end", ["runner", "cli"])
def test_front_ends_lead_the_clock_with_the_notes_on_its_pulses(front_end):
    """--clock out through ptys, call and response in 1-bar phrases of 2/4 at 240 BPM: every
    note-on of the answers goes out right after the pulse of its grid tick (2 pulses a tick at 12
    ticks a quarter: pulse 2 * tick, the (2 * tick + 1)th since Start), in the same batch, not
    before it; the jam player times the pulses and the notes on one clock, the live encoder's.
    The answers' ticks are the front end's --events lines."""
    # A phrase of two quarter notes in bars 0 and 2, answered in bars 1 and 3.
    phrases = [
        (bar * 500_000 + q * 250_000 + t, [0x90, pitch, velocity])
        for bar in (0, 2)
        for q, pitch in enumerate((67, 71))
        for t, velocity in ((0, 90), (200_000, 0))
    ]
    _, decided, messages, _ = play_with_a_clock(front_end, phrases, clock="out")
    assert len(decided) > 4, decided
    assert messages[0][1].type == "start" and messages[-1][1].type == "stop"
    pulses, on_pulses = 0, []
    for _, m in messages:
        if m.type == "clock":
            pulses += 1
        elif m.type == "note_on" and m.velocity > 0:
            on_pulses.append((pulses, m.note))
    assert sorted(n for _, n in on_pulses) == sorted(n for _, n in decided)
    # Each note-on right after the pulse of its tick (2 * tick + 1 pulses sent), or a pulse or
    # two later where the loop woke late on this shared host; never before it.
    due = [[2 * tick + 1 for tick, p in decided if p == pitch] for _, pitch in on_pulses]
    assert all(
        any(d <= seen <= d + 2 for d in ds) for (seen, _), ds in zip(on_pulses, due, strict=True)
    ), (
        on_pulses,
        decided,
    )
    exact = sum(seen in ds for (seen, _), ds in zip(on_pulses, due, strict=True))
    assert exact >= 0.9 * len(on_pulses), (on_pulses, decided)
