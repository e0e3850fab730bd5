"""training.music_theory: hand-built passages whose answers are known exactly, and real chorales."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics as M
from training import music_theory as T

C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def chord_sequence(chords, programs=None, velocity=None) -> M.Notes:
    """One chord per quarter note; chord ``k`` is a tuple of pitches, voice ``j`` plays the
    ``j``-th pitch on ``programs[j]`` (default: each voice its own program 0, 1, ...)."""
    onset, pitch, program = [], [], []
    for k, chord in enumerate(chords):
        for j, p in enumerate(chord):
            onset.append(float(k))
            pitch.append(p)
            program.append(programs[j] if programs else j)
    return M.notes_from_arrays(onset, [1.0] * len(onset), pitch, velocity, program)


def scale_bars(*tonics: int) -> M.Notes:
    """One 4/4 bar per tonic: its major scale up in eighth notes."""
    onset, pitch = [], []
    for bar, tonic in enumerate(tonics):
        onset += list(bar * 4 + np.arange(8) * 0.5)
        pitch += [p - 60 + tonic for p in C_MAJOR_SCALE]
    return M.notes_from_arrays(onset, [0.5] * len(onset), pitch)


@pytest.fixture(scope="module")
def chorales(chorale_paths, tokenizer) -> dict[str, M.Notes]:
    """Each chorale as the model sees it: tokenized, decoded, grouped in bars."""
    return {
        path.stem: M.notes_from_score(tokenizer.decode(tokenizer.encode(path)))
        for path in chorale_paths
    }


# ---------------------------------------------------------------------------------------------
# Voice leading and harmony


def test_exactly_two_parallel_fifths_and_one_octave():
    # (soprano, bass) per quarter note.
    passage = [
        (67, 60),  # G4 over C4: a fifth
        (69, 62),  # both up, a fifth again: parallel fifth 1
        (71, 64),  # both up, a fifth: parallel fifth 2
        (72, 60),  # contrary motion into an octave
        (74, 62),  # both up, an octave again: parallel octave
        (74, 55),  # oblique: the soprano holds
        (79, 48),  # contrary motion, fifth to (compound) fifth: allowed
    ]
    notes = chord_sequence(passage, programs=[52, 42])
    assert T.parallels(notes) == (2, 1, 0)
    summary = T.summarize([T.analyze(notes)])
    assert summary["beats"] == 8  # two 4/4 bars
    assert summary["parallel_fifths_per_100_beats"] == pytest.approx(25.0)
    assert summary["parallel_octaves_per_100_beats"] == pytest.approx(12.5)


def test_a_doubled_line_is_not_parallel_octaves():
    line = [60, 62, 64, 65, 67]
    doubled = chord_sequence([(p + 12, p) for p in line], programs=[40, 42])
    assert T.parallels(doubled) == (0, 0, 1)
    # Unisons count as octaves when the two voices are otherwise independent lines.
    independent = chord_sequence([(60, 60), (62, 62), (67, 60), (69, 64), (72, 67)])
    assert T.parallels(independent) == (0, 1, 0)


def test_voice_lines_take_the_top_of_a_keyboard_chord():
    notes = chord_sequence([(60, 64, 67), (62, 65, 69)], programs=[0, 0, 0])
    voices, lines = T.voice_lines(notes)
    np.testing.assert_array_equal(voices, [0])
    np.testing.assert_array_equal(lines[:, 0], [67, 69])
    assert T.parallels(notes) == (0, 0, 0)  # one voice: nothing to be parallel with


def test_semitone_clashes_count_seconds_sevenths_and_ninths():
    moments = [
        (60, 64, 67),  # C major triad: no clash
        (60, 71),  # major seventh
        (60, 73),  # minor ninth
        (60, 62),  # major second: no clash
        (60,),  # one pitch: not counted
    ]
    assert T.semitone_clashes(chord_sequence(moments)) == (2, 4)


def test_triads_and_sevenths_with_or_without_fifth():
    moments = [
        (60, 64, 67),  # C major
        (55, 59, 65),  # G7 without its fifth
        (60, 62, 64),  # a cluster
        (60, 64),  # two pitch classes: not counted
        (48, 64, 67, 70),  # C7
        (60, 64, 68),  # augmented
    ]
    assert T.tertian_chords(chord_sequence(moments)) == (4, 5)


def test_chord_roots():
    c, e, eb = 0, 4, 3
    assert T.chord_root(T._mask([0, 4, 7])) == c
    assert T.chord_root(T._mask([4, 7, 0]), bass_class=e) == c  # first inversion
    assert T.chord_root(T._mask([7, 11, 5])) == 7  # G7 without its fifth
    assert T.chord_root(T._mask([0, 3, 6, 9]), bass_class=eb) == eb  # diminished 7th: the bass
    assert T.chord_root(T._mask([0, 1, 2])) is None


# ---------------------------------------------------------------------------------------------
# Key


def test_a_c_major_scale_is_in_c_major_and_transposes():
    assert T.piece_key(scale_bars(60)) == 0
    assert T.piece_key(scale_bars(67)) == 7  # G major
    assert T.key_name(T.piece_key(scale_bars(66))) == "F# major"


def test_a_profile_finds_its_own_key():
    assert T.find_key(np.roll(T.KK_MINOR, 9)) == 12 + 9  # A minor
    assert T.find_key(np.roll(T.KK_MAJOR, 3)) == 3  # E-flat major
    assert T.find_key(np.zeros(12)) is None


def test_out_of_key_notes_in_major_and_minor():
    notes = M.notes_from_arrays(np.arange(9) * 0.5, [0.5] * 9, [*C_MAJOR_SCALE, 66])
    assert T.out_of_key(notes, key=0) == (1, 9)  # F# in C major
    a_minor = 12 + 9
    # A minor keeps its raised sixth and seventh (F#, G#); B-flat is out.
    minor = M.notes_from_arrays(np.arange(4), [1] * 4, [66, 68, 70, 69])
    assert T.out_of_key(minor, key=a_minor) == (1, 4)


def test_local_key_agreement_and_key_stability():
    notes = scale_bars(60, 60, 66)
    assert T.piece_key(notes) == 0
    assert T.bar_keys(notes) == [0, 0, 6]
    assert T.local_key_agreement(notes, 0) == (2, 3)
    # In context (two bars each side) the F# bar between C bars reads as C: the dominant or a
    # passing tonicisation does not leave the key a listener hears.
    passing = scale_bars(60, 60, 66, 60, 60)
    assert T.bar_keys(passing)[2] == 6
    assert T.bar_keys(passing, context_bars=2) == [0] * 5
    assert T.local_key_agreement(passing, 0, context_bars=2) == (5, 5)
    assert T.local_key_agreement(passing, 0) == (4, 5)
    # Windows of one bar: C, C, F#: one of the two consecutive pairs keeps its key.
    assert T.key_stability(notes, window_bars=1) == (1, 2)
    # 32 bars in C then 16 in F#: windows C, C, F#.
    assert T.key_stability(scale_bars(*[60] * 32, *[66] * 16)) == (1, 2)
    assert T.key_stability(scale_bars(*[60] * 20)) == (0, 0)  # one whole window


# ---------------------------------------------------------------------------------------------
# Range, form, rhythm and dynamics


def test_range_violations_per_voice(chorale_paths):
    from training.data import programs_for

    soprano, alto, tenor, bass = programs_for("vocal", 4)
    assert T.usual_range(soprano) == (60, 81)
    assert T.usual_range(alto) == (53, 74)
    assert T.usual_range(tenor) == (48, 69)
    assert T.usual_range(bass) == (36, 81)  # the bass voice is a cello (42)
    assert T.usual_range(57) == T.FAMILY_RANGES[7]  # a trombone: the brass family's range
    notes = M.notes_from_arrays(
        [0, 1, 2, 3], [1] * 4, [59, 70, 20, 36], program=[soprano, soprano, 0, -1]
    )
    assert T.range_violations(notes) == {soprano: (1, 2), 0: (1, 1)}  # drums have no range


def test_final_chord_on_the_tonic():
    ending_on = {
        "C major": ((67, 64, 60), True),
        "C/E (first inversion)": ((67, 60, 52), True),
        "G major (half cadence)": ((67, 62, 55), False),
        "E minor": ((71, 67, 52), False),
    }
    for name, (last, expected) in ending_on.items():
        notes = chord_sequence([(67, 62, 55), last])
        assert T.final_on_tonic(notes, key=0) is expected, name
    assert T.final_on_tonic(M.notes_from_arrays([], [], []), key=0) is None


def test_durations_and_velocities():
    notes = M.notes_from_arrays([0, 1, 2, 4], [1, 1, 2, 2], [60] * 4, velocity=[60, 80, 60, 80])
    assert T.distinct_durations(notes) == 2
    assert T.duration_entropy(notes) == pytest.approx(1.0)
    analysis = T.analyze(notes)
    assert analysis.velocity_std == pytest.approx(10.0)
    assert analysis.distinct_velocities == 2
    assert T.duration_entropy(M.notes_from_arrays([0, 1], [1, 1], [60, 62])) == 0.0


def test_summarize_pools_counts():
    first = T.analyze(chord_sequence([(60, 71), (60, 64, 67)]))  # 1 clash of 2
    second = T.analyze(chord_sequence([(60, 64), (62, 65), (64, 67)]))  # none of 3
    summary = T.summarize([first, second])
    assert summary["excerpts"] == 2
    assert summary["semitone_clash_share"] == pytest.approx(1 / 5)
    assert summary["tertian_share"] == pytest.approx(1.0)  # the one three-class moment
    assert T.summarize([])["semitone_clash_share"] is None


def test_adherence_families_are_the_general_midi_families():
    from sage_edge.pianoroll import _GM_FAMILIES

    for family, program in T.ADHERENCE_FAMILIES.items():
        if program < 0:
            assert family == "drums"
            continue
        assert program % 8 == (1 if family == "pipe" else 0)  # the flute, not the piccolo
        assert family == _GM_FAMILIES[program // 8].lower()
    assert len(T.ADHERENCE_FAMILIES) == 13


# ---------------------------------------------------------------------------------------------
# Real music


def test_bach_chorales_have_few_parallels_and_end_on_the_tonic(chorales):
    analyses = {name: T.analyze(notes) for name, notes in chorales.items()}
    summary = T.summarize(list(analyses.values()))
    assert summary["parallel_fifths_per_100_beats"] < 1.0
    assert summary["parallel_octaves_per_100_beats"] < 3.0
    assert summary["final_on_tonic_rate"] >= 10 / 12
    assert summary["semitone_clash_share"] < 0.15
    assert summary["tertian_share"] > 0.75
    assert summary["out_of_key_share"] < 0.05
    # Plain four-part chorales, no doubling instruments: not one parallel.
    for name in ("bwv269", "bwv66.6", "bwv277"):
        assert T.parallels(chorales[name]) == (0, 0, 0), name
    assert T.key_name(analyses["bwv66.6"].key) == "F# minor"
    assert T.key_name(analyses["bwv269"].key) == "G major"
