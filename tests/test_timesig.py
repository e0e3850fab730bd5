"""Bar lines of generated music: the written MIDI says, bar by bar, the time signature each
generated bar has, and ``bars`` counts notated bars (docs/data.md, "Meters outside the
tokenizer's set").

Prompts are real notes (a Bach chorale's first bars) re-notated in meters the tokenizer maps:
7/8 and 3/8 (one token bar is two notated bars), 13/16 (no quarter-note form: 4/4 tokens), 4/2 and
6/8 (one token bar is one notated bar, under another name).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import symusic

from sage_edge.engine import DEFAULT_MODEL, Engine, SamplingParams
from sage_edge.tokenizer import (
    normalize_time_signatures,
    notated_bar_at,
    quarter_note_meter,
)
from sage_edge.vocab import Kind

PROMPT_BARS = 3

# The prompt's meter -> the TimeSig the tokenizer writes for it and how many notated bars one such
# token bar spans (None: no quarter-note form, the tokens are 4/4 and their bar lines are not the
# notation's).
METERS = {
    (7, 8): ((7, 4), 2),
    (3, 8): ((3, 4), 2),
    (13, 16): None,
    (4, 2): ((8, 4), 1),
    (6, 8): ((3, 4), 1),
}


@pytest.fixture(scope="module")
def engine(shipped_and_tiny_engine) -> Engine:
    return shipped_and_tiny_engine


def renotated_chorale(chorale: Path, numerator: int, denominator: int) -> symusic.Score:
    """The chorale's notes that start in its first PROMPT_BARS bars of numerator/denominator,
    under that one time signature."""
    score = symusic.Score(chorale)
    bar = Fraction(4 * score.ticks_per_quarter * numerator, denominator)
    score.time_signatures = symusic.core.TimeSignatureTickList(
        [symusic.TimeSignature(0, numerator, denominator)]
    )
    for track in score.tracks:
        kept = [n for n in track.notes if n.time < PROMPT_BARS * bar]
        track.notes = symusic.core.NoteTickList(kept)
    return score


def notes_of(score: symusic.Score) -> list[tuple]:
    return sorted(
        (t.program, t.is_drum, n.time, n.duration, n.pitch, n.velocity)
        for t in score.tracks
        for n in t.notes
    )


def bars_of_file(score: symusic.Score, start: int, count: int) -> tuple[list, Fraction]:
    """The signatures of ``count`` bars from tick ``start`` as a MIDI reader counts them (a bar
    lasts its signature's length) and the tick where they end; no signature event may fall
    inside one of them."""
    events = sorted((s.time, s.numerator, s.denominator) for s in score.time_signatures)
    tpq = score.ticks_per_quarter
    bars, tick = [], start
    for _ in range(count):
        time, numerator, denominator = max(e for e in events if e[0] <= tick)
        bars.append((numerator, denominator))
        length = Fraction(4 * tpq * numerator, denominator)
        after = [e[0] for e in events if e[0] > tick]
        assert not after or after[0] >= tick + length, "a signature event cuts a bar short"
        tick += length
    return bars, tick


def test_quarter_note_meters():
    for (numerator, denominator), expected in METERS.items():
        meter = quarter_note_meter(numerator, denominator)
        assert meter == (None if expected is None else (expected[0][0], expected[1]))
    assert quarter_note_meter(2, 2) == (4, 1)
    assert quarter_note_meter(12, 8) == (6, 1)
    assert quarter_note_meter(0, 4) is None
    score = symusic.Score(480)
    for time, numerator, denominator in ((0, 7, 8), (3360, 13, 16), (6480, 2, 2)):
        score.time_signatures.append(symusic.TimeSignature(time, numerator, denominator))
    normalized = normalize_time_signatures(score).time_signatures
    assert [(s.numerator, s.denominator) for s in normalized] == [(7, 4), (4, 4), (4, 4)]


def test_notated_bars_follow_the_signatures():
    score = symusic.Score(480)
    # Two bars of 7/8 (1680 ticks each), then 13/16 from 3360 (1560 ticks), a 2/2 that
    # interrupts the second 13/16 bar at 5000.
    for time, numerator, denominator in ((0, 7, 8), (3360, 13, 16), (5000, 2, 2)):
        score.time_signatures.append(symusic.TimeSignature(time, numerator, denominator))
    assert notated_bar_at(score, 0) == (0, 1680, 7, 8)
    assert notated_bar_at(score, 1680) == (1680, 3360, 7, 8)
    assert notated_bar_at(score, 3359) == (1680, 3360, 7, 8)
    assert notated_bar_at(score, 4920) == (4920, 5000, 13, 16)
    assert notated_bar_at(score, 5000) == (5000, 6920, 2, 2)
    assert notated_bar_at(symusic.Score(96), 400) == (384, 768, 4, 4)  # none: 4/4


@pytest.mark.parametrize("meter", list(METERS), ids=lambda m: f"{m[0]}-{m[1]}")
@pytest.mark.parametrize("bars", [3, 4])
def test_continuation_is_written_in_the_bars_it_has(engine, chorale_paths, tmp_path, meter, bars):
    numerator, denominator = meter
    prompt = renotated_chorale(chorale_paths[1], numerator, denominator)
    generation = engine.generate(
        prompt, bars=bars, seed=2, sampling=SamplingParams(temperature=0.9)
    )
    path = tmp_path / "continued.mid"
    generation.score.dump_midi(path)
    written = symusic.Score(path)
    assert written.ticks_per_quarter == prompt.ticks_per_quarter
    tpq = prompt.ticks_per_quarter

    # The seam: the bar line after the prompt's last onset, as the prompt notates it.
    bar_ticks = Fraction(4 * tpq * numerator, denominator)
    last_onset = max(n.time for t in prompt.tracks for n in t.notes)
    seam = (last_onset // bar_ticks + 1) * bar_ticks
    assert seam == PROMPT_BARS * bar_ticks  # the chorale has a note in every prompt bar

    # The bars the tokens give: each TimeSig opens a bar, written in the prompt's meter where it
    # is the prompt meter's quarter-note form, else as it is; `bars` notated bars in all.
    table = engine.tokenizer.token_table()
    expected = []
    for token in generation.tokens[generation.prompt_length :]:
        if table["kind"][token] == Kind.TIMESIG:
            signature = (int(table["a"][token]), int(table["b"][token]))
            if METERS[meter] is not None and signature == METERS[meter][0]:
                expected += [meter] * METERS[meter][1]
            else:
                expected.append(signature)
    assert len(expected) >= bars
    expected = expected[:bars]

    prompt_bars, at_seam = bars_of_file(written, 0, PROMPT_BARS)
    assert prompt_bars == [meter] * PROMPT_BARS and at_seam == seam
    new_bars, end = bars_of_file(written, round(seam), bars)
    assert new_bars == expected

    # The file reads back as written: no two notes of one pitch overlap in a track (a reader would
    # pair their note-offs first in, first out and give both wrong lengths).
    assert notes_of(written) == notes_of(generation.score)
    # The prompt's notes are unchanged, but for a held note the continuation strikes again: it
    # ends there. The new ones start on the seam and sound only until the last bar line, so the
    # file holds `bars` bars after the seam.
    onsets: dict[tuple, list] = {}
    for n in notes_of(written):
        onsets.setdefault((n[0], n[1], n[4]), []).append(n[2])

    def held_until_restruck(n: tuple) -> tuple:
        restruck = [t for t in onsets[(n[0], n[1], n[4])] if n[2] < t < n[2] + n[3]]
        return n if not restruck else (*n[:3], min(restruck) - n[2], *n[4:])

    before_seam = [n for n in notes_of(written) if n[2] < seam]
    assert before_seam == sorted(held_until_restruck(n) for n in notes_of(prompt))
    new = [n for n in notes_of(written) if n[2] >= seam]
    assert new, "nothing was generated"
    assert all(n[2] + n[3] <= end for n in new)
    if engine.path == DEFAULT_MODEL:  # the trained model plays in its last bar
        last_bar_start = end - Fraction(4 * tpq * new_bars[-1][0], new_bars[-1][1])
        assert written.end() > last_bar_start
