"""The tokenizer: configuration, attribute table, round trips and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import symusic

from sage_edge import MidiInputError
from sage_edge.tokenizer import (
    TOKEN_TABLE_DTYPE,
    Tokenizer,
    normalize_time_signatures,
)
from sage_edge.vocab import KIND_FAMILY, Family, Kind


def _notes(score: symusic.Score, tpq: int):
    """(onset, program, pitch, duration, velocity) at ``tpq`` ticks per quarter, sorted."""
    scale = tpq / score.ticks_per_quarter
    out = []
    for t in score.tracks:
        program = -1 if t.is_drum else t.program
        for n in t.notes:
            out.append((n.time * scale, program, n.pitch, n.duration * scale, n.velocity))
    return sorted(out)


def test_default_configuration(tokenizer):
    assert 300 <= tokenizer.vocab_size <= 600
    assert tokenizer.ticks_per_quarter == 12
    assert [tokenizer.id_of(s) for s in ("PAD_None", "BOS_None", "EOS_None", "MASK_None")] == [
        0,
        1,
        2,
        3,
    ]
    cfg = tokenizer.miditok.config
    assert cfg.use_programs and cfg.one_token_stream_for_programs
    assert not (cfg.use_rests or cfg.use_chords or cfg.use_sustain_pedals or cfg.use_pitch_bends)
    assert set(cfg.programs) == set(range(-1, 128))


def test_json_round_trip_gives_identical_vocab(tokenizer):
    text = tokenizer.to_json()
    again = Tokenizer.from_json(text)
    assert again.vocab == tokenizer.vocab
    assert again.to_json() == text
    np.testing.assert_array_equal(again.token_table(), tokenizer.token_table())


def test_from_json_refuses_foreign_json():
    with pytest.raises(ValueError):
        Tokenizer.from_json('{"format": "something-else"}')


def test_table_matches_token_strings(tokenizer):
    table = tokenizer.token_table()
    assert table.dtype == TOKEN_TABLE_DTYPE and len(table) == tokenizer.vocab_size
    tpq = tokenizer.ticks_per_quarter
    for i, token in enumerate(tokenizer.token_strings()):
        kind = Kind(table["kind"][i]).name
        family, a, b = int(table["family"][i]), int(table["a"][i]), int(table["b"][i])
        assert family == KIND_FAMILY[Kind(table["kind"][i])]
        typ, _, value = token.partition("_")
        expected = {
            "PAD": ("PAD", 0, 0),
            "BOS": ("BOS", 0, 0),
            "EOS": ("EOS", 0, 0),
            "MASK": ("MASK", 0, 0),
            "Bar": ("BAR", 0, 0),
        }.get(typ)
        if expected is None:
            if typ == "TimeSig":
                num, den = map(int, value.split("/"))
                expected = ("TIMESIG", num, den)
            elif typ == "Position":  # positions step in 1/12 quarter at 12 ticks per quarter
                expected = ("POSITION", int(value) * tpq // 12, 0)
            elif typ == "Tempo":
                expected = ("TEMPO", round(float(value) * 1000), 0)
            elif typ == "Duration":
                beat, pos, res = map(int, value.split("."))
                expected = ("DURATION", (beat * res + pos) * tpq // res, 0)
            else:
                name = {
                    "Program": "PROGRAM",
                    "Pitch": "PITCH",
                    "PitchDrum": "PITCH_DRUM",
                    "Velocity": "VELOCITY",
                }[typ]
                expected = (name, int(value), 0)
        assert (kind, a, b) == expected, token
    assert tokenizer.families[tokenizer.id_of("Program_-1")] == Family.PROGRAM
    assert tokenizer.family_of([tokenizer.id_of("Duration_1.0.12")])[0] == Family.DURATION
    assert table["a"][tokenizer.id_of("Program_-1")] == -1


def test_round_trip_real_chorales(tokenizer, chorale_paths):
    """Every note's onset, program and pitch survive; duration and velocity within quantization.

    A note doubled at the same onset, pitch and program (a unison inside one part) is one note.
    """
    tpq = tokenizer.ticks_per_quarter
    velocities = tokenizer.miditok.velocities
    for path in chorale_paths:
        original = symusic.Score(str(path))
        decoded = tokenizer.decode(tokenizer.encode(path))
        assert decoded.ticks_per_quarter == tpq
        a, b = {}, {}
        for n in _notes(original, tpq):
            a.setdefault(n[:3], []).append(n[3:])
        for n in _notes(decoded, tpq):
            b[n[:3]] = n[3:]
        assert a.keys() == b.keys(), path.name
        assert len({k[1] for k in b}) == len({t.program for t in original.tracks if t.notes})
        for key, versions in a.items():
            d1, v1 = b[key]
            # durations: 1/12 quarter up to 2 quarters, coarser bins beyond
            assert any(abs(d1 - d0) <= max(1, 0.125 * d0) for d0, _ in versions), (path, key)
            assert any(v1 == velocities[np.argmin(np.abs(velocities - v0))] for _, v0 in versions)


def test_table_decodes_like_miditok(tokenizer, chorale_paths):
    """Onsets from the table alone: bar start + position, bars of num·4·tpq/den ticks."""
    table = tokenizer.token_table()
    kinds = [Kind(k).name for k in table["kind"]]
    for path in chorale_paths[:4]:
        ids = tokenizer.encode(path)
        notes, bar_start, ts, pos, prog, pitch = [], None, (4, 4), 0, 0, 0
        for i in ids:
            kind, a, b = kinds[i], int(table["a"][i]), int(table["b"][i])
            if kind == "BAR":
                bar_start = 0 if bar_start is None else bar_start + tokenizer.bar_ticks(*ts)
                pos = 0
            elif kind == "TIMESIG":
                ts = (a, b)
            elif kind == "POSITION":
                pos = a
            elif kind == "PROGRAM":
                prog = a
            elif kind == "PITCH":
                pitch = a
            elif kind == "DURATION":
                notes.append((bar_start + pos, prog, pitch, a))
        decoded = tokenizer.decode(ids)
        assert sorted(notes) == sorted(
            (n.time, t.program, n.pitch, n.duration) for t in decoded.tracks for n in t.notes
        )


def test_time_signatures_become_quarter_based(tokenizer):
    score = symusic.Score(480)
    track = symusic.Track("t", 40, False)
    for k in range(24):
        track.notes.append(symusic.Note(k * 240, 240, 60 + k % 12, 80))
    score.tracks.append(track)
    score.time_signatures.append(symusic.TimeSignature(0, 6, 8))
    score.time_signatures.append(symusic.TimeSignature(1440, 3, 2))
    norm = normalize_time_signatures(score)
    assert [(t.numerator, t.denominator) for t in norm.time_signatures] == [(3, 4), (6, 4)]
    assert [(t.numerator, t.denominator) for t in score.time_signatures] == [(6, 8), (3, 2)]
    decoded = tokenizer.decode(tokenizer.encode(score))
    assert [n.time for n in decoded.tracks[0].notes] == [k * 6 for k in range(24)]


def test_drums_use_pitchdrum_tokens(tokenizer):
    score = symusic.Score(96)
    drums = symusic.Track("kit", 0, True)
    drums.notes.append(symusic.Note(0, 24, 36, 100))
    score.tracks.append(drums)
    strings = tokenizer.token_strings()
    tokens = [strings[i] for i in tokenizer.encode(score)]
    assert "Program_-1" in tokens and "PitchDrum_36" in tokens
    decoded = tokenizer.decode(tokenizer.encode(score))
    assert decoded.tracks[0].is_drum and decoded.tracks[0].notes[0].pitch == 36


# bad input ---------------------------------------------------------------------------------


def test_missing_file(tokenizer, tmp_path):
    path = tmp_path / "nope.mid"
    with pytest.raises(MidiInputError, match="nope.mid.*no such file"):
        tokenizer.encode(path)


def test_not_midi(tokenizer, tmp_path):
    path = tmp_path / "text.mid"
    path.write_text("this is not a MIDI file\n" * 10)
    with pytest.raises(MidiInputError, match="text.mid.*not a MIDI file"):
        tokenizer.encode(path)


def test_no_notes(tokenizer, tmp_path):
    score = symusic.Score(480)
    score.tracks.append(symusic.Track("empty", 0, False))
    score.tempos.append(symusic.Tempo(0, 100.0))
    path = tmp_path / "empty.mid"
    score.dump_midi(str(path))
    with pytest.raises(MidiInputError, match="empty.mid.*no notes"):
        tokenizer.encode(path)
    with pytest.raises(MidiInputError, match="no notes"):
        tokenizer.encode(symusic.Score(480))


def test_notes_outside_pitch_range(tokenizer):
    score = symusic.Score(480)
    track = symusic.Track("high", 0, False)
    track.notes.append(symusic.Note(0, 480, 120, 80))
    score.tracks.append(track)
    with pytest.raises(MidiInputError, match="pitch range"):
        tokenizer.encode(score)


def test_truncated_midi_in_subprocess(chorale_paths, tmp_path):
    """Every cut point gives MidiInputError; a subprocess so a crash in C++ cannot hide."""
    data = chorale_paths[0].read_bytes()
    cuts = [0, 4, 13, 14, 22, 100, len(data) // 2, len(data) - 1]
    for cut in cuts:
        (tmp_path / f"cut{cut}.mid").write_bytes(data[:cut])
    script = f"""
import sys
from pathlib import Path
from sage_edge import MidiInputError
from sage_edge.tokenizer import Tokenizer
tok = Tokenizer.default()
for cut in {cuts!r}:
    path = Path({str(tmp_path)!r}) / f"cut{{cut}}.mid"
    try:
        tok.encode(path)
    except MidiInputError as exc:
        assert path.name in str(exc), exc
        print("ok", cut, exc)
    else:
        print("accepted", cut)
        sys.exit(3)
"""
    root = Path(__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok") == len(cuts)
