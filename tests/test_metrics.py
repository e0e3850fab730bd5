"""training.metrics: hand-built examples with known numbers, and real chorales."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics as M


@pytest.fixture(scope="module")
def chorales(chorale_paths, tokenizer) -> dict[str, M.Notes]:
    """Each chorale as the model sees it: tokenized, decoded, grouped in bars."""
    out = {}
    for path in chorale_paths:
        score = tokenizer.decode(tokenizer.encode(path))
        out[path.stem] = M.notes_from_score(score)
    return out


def c_major_scale_bar() -> M.Notes:
    """One 4/4 bar: C D E F G A B C as eighth notes."""
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    return M.notes_from_arrays(np.arange(8) * 0.5, [0.5] * 8, pitches)


# ---------------------------------------------------------------------------------------------
# Notes and bars


def test_notes_from_arrays_groups_bars():
    notes = M.notes_from_arrays([0, 1, 4, 9.5], [1, 1, 1, 0.5], [60, 62, 64, 65])
    assert notes.n_bars == 3
    np.testing.assert_array_equal(notes.bars, [0, 4, 8, 12])
    np.testing.assert_array_equal(notes.bar_of_note, [0, 0, 1, 2])
    np.testing.assert_array_equal(M.notes_per_bar(notes), [2, 1, 1])


def test_slice_bars_rebases_times():
    notes = M.notes_from_arrays([0, 4, 5, 8], [1, 1, 1, 1], [60, 62, 64, 65])
    part = M.slice_bars(notes, 1, 2)
    np.testing.assert_array_equal(part.onset, [0, 1])
    np.testing.assert_array_equal(part.bars, [0, 4])
    with pytest.raises(ValueError):
        M.slice_bars(notes, 2, 5)


def test_bar_lines_follow_time_signatures(chorales, tokenizer):
    import symusic

    score = symusic.Score(12)
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    score.time_signatures.append(symusic.TimeSignature(12 * 6, 2, 2))  # after two bars of 3/4
    np.testing.assert_array_equal(M.bar_lines(score, 4), [0, 3, 6, 10, 14])
    # A decoded chorale: every note falls inside its bars.
    notes = chorales["bwv269"]
    assert notes.n_bars == 21
    assert np.all((notes.bar_of_note >= 0) & (notes.bar_of_note < notes.n_bars))


def test_bar_chroma_weights_by_sounding_time():
    # A C held across the bar line (3 quarters in bar 0, 1 in bar 1) and a G in bar 1.
    notes = M.notes_from_arrays([1, 4], [4, 2], [60, 67], bars=[0, 4, 8])
    chroma = M.bar_chroma(notes)
    assert chroma[0, 0] == 3 and chroma[1, 0] == 1 and chroma[1, 7] == 2
    assert chroma.sum() == 6


def test_bar_onsets_on_sixteenth_grid():
    notes = M.notes_from_arrays([0, 0, 0.25, 1 / 3, 3.75], [1] * 5, [60, 64, 62, 65, 67])
    pattern = M.bar_onsets(notes)
    assert pattern.shape == (1, M.GRID_SLOTS)
    assert list(np.flatnonzero(pattern[0])) == [0, 1, 15]  # the triplet falls in slot 1


# ---------------------------------------------------------------------------------------------
# NMSI


def test_nmsi_of_identical_excerpts_is_100(chorales):
    for notes in chorales.values():
        result = M.nmsi(notes, notes)
        assert result.value == pytest.approx(100.0)


def test_nmsi_against_another_chorale_is_lower_and_terms_in_range(chorales):
    names = sorted(chorales)
    values = []
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        real = M.slice_bars(chorales[a], 4, min(12, chorales[a].n_bars))
        other = M.slice_bars(chorales[b], 4, min(12, chorales[b].n_bars))
        result = M.nmsi(other, real)
        for term in (result.chroma, result.groove, result.structure, result.density):
            assert 0.0 <= term <= 1.0
        assert 0.0 <= result.value < 100.0
        values.append(result.value)
    assert 40 < np.mean(values) < 95  # chorales resemble each other, but not completely


def test_nmsi_prefers_another_version_of_the_same_chorale(chorales):
    # bwv18.5-lz and bwv18.5-w are two harmonisations of one tune, -w a whole tone lower.
    real = M.slice_bars(chorales["bwv18.5-lz"], 4, 12)
    version = M.slice_bars(chorales["bwv18.5-w"], 4, 12)
    as_is = M.nmsi(version, real)
    assert as_is.groove == pytest.approx(1.0) and as_is.structure == pytest.approx(1.0)
    assert as_is.chroma < 0.6  # chroma is not transposition-invariant, on purpose
    in_key = M.notes_from_arrays(
        version.onset,
        version.duration,
        version.pitch + 2,
        program=version.program,
        bars=version.bars,
    )
    same_tune = M.nmsi(in_key, real).value
    others = [
        M.nmsi(M.slice_bars(n, 4, min(12, n.n_bars)), real).value
        for name, n in chorales.items()
        if not name.startswith("bwv18.5")
    ]
    assert max(others) < same_tune < 100.0


def test_nmsi_terms_on_hand_built_bars():
    scale = c_major_scale_bar()  # chroma: C 1, D E F G A B 0.5 each
    shifted = M.notes_from_arrays(scale.onset, scale.duration, scale.pitch + 1)
    result = M.nmsi(shifted, scale)
    assert result.groove == pytest.approx(1.0)  # same rhythm
    assert result.density == pytest.approx(1.0)  # same notes per bar
    assert result.structure == pytest.approx(1.0)  # one bar: both SSMs are [[1]]
    # C# major shares C (0.5 from B#) and F (0.5 from E#): (1·0.5 + 0.5·0.5) / 2.5.
    assert result.chroma == pytest.approx(0.3)
    assert result.value == pytest.approx(25 * 3.3)


def test_density_and_structure_terms():
    quarter_notes = M.notes_from_arrays(np.arange(8.0), [1] * 8, [60] * 8)  # 2 bars of 4
    half_notes = M.notes_from_arrays([0, 2, 4, 6], [2] * 4, [60] * 4)  # 2 bars of 2
    # |4 − 2| / 4 in both bars.
    assert M.density_distance(half_notes, quarter_notes) == pytest.approx(0.5)
    # A generated excerpt one bar short: the missing bar counts as silent (distance 1 there).
    one_bar = M.slice_bars(quarter_notes, 0, 1)
    assert M.density_distance(one_bar, quarter_notes) == pytest.approx(0.5)
    assert M.chroma_similarity(one_bar, quarter_notes) == pytest.approx(0.5)
    # Both excerpts repeat one bar: every SSM entry is 1, so their structures agree.
    assert M.ssm_distance(half_notes, quarter_notes) == pytest.approx(0.0)
    # Bar 0 ≠ bar 1 in one excerpt only: the off-diagonal entries differ.
    changing = M.notes_from_arrays([0, 1, 2, 3, 4], [1] * 5, [60, 60, 60, 60, 67])
    ssm = M.self_similarity(changing)
    # chroma cosine 0 (C vs G), onset cosine of {0,4,8,12} vs {0}: 1/2.
    assert ssm[0, 1] == pytest.approx(0.5 * (0 + 0.5))
    assert M.ssm_distance(changing, quarter_notes) == pytest.approx(2 * 0.75 / 4)


def test_resize_matrix_nearest_neighbour():
    m = np.array([[1.0, 0.2], [0.2, 1.0]])
    np.testing.assert_array_equal(
        M.resize_matrix(m, 4),
        [[1, 1, 0.2, 0.2], [1, 1, 0.2, 0.2], [0.2, 0.2, 1, 1], [0.2, 0.2, 1, 1]],
    )


def test_cosine_conventions():
    zero, one = np.zeros(3), np.array([1.0, 0, 0])
    assert M.cosine(zero, zero) == 1.0
    assert M.cosine(zero, one) == 0.0
    assert M.cosine(one, 2 * one) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Distribution metrics


def test_pitch_class_entropy_and_scale_consistency():
    scale = c_major_scale_bar()  # 7 classes, C twice
    p = np.array([2, 1, 1, 1, 1, 1, 1]) / 8
    assert M.pitch_class_entropy(scale) == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert M.scale_consistency(scale) == 1.0
    chromatic = M.notes_from_arrays(np.arange(12) * 0.25, [0.25] * 12, 60 + np.arange(12))
    assert M.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert M.scale_consistency(chromatic) == pytest.approx(7 / 12)
    drums = M.notes_from_arrays([0, 1], [1, 1], [36, 38], program=[-1, -1])
    assert M.pitch_class_entropy(drums) == 0.0 and M.scale_consistency(drums) == 1.0


def test_groove_consistency():
    same = M.notes_from_arrays(np.arange(8.0), [1] * 8, [60] * 8)  # the same onsets in 2 bars
    assert M.groove_consistency(same) == 1.0
    # Bar 0 has onsets at slots 0,4,8,12, bar 1 at slot 0 only: 3 of 16 slots differ.
    changed = M.notes_from_arrays([0, 1, 2, 3, 4], [1] * 5, [60] * 5)
    assert M.groove_consistency(changed) == pytest.approx(1 - 3 / 16)


def test_polyphony_and_notes_per_bar():
    # A held C (0–4) under three quarter notes starting at 1, 2, 3; a chord of two at 0.
    notes = M.notes_from_arrays([0, 0, 1, 2, 3], [4, 1, 1, 1, 1], [48, 60, 62, 64, 65])
    # onset 0: C3 + C4 = 2; at 1: C3 + D = 2; at 2: 2; at 3: 2.
    assert M.polyphony(notes) == pytest.approx(2.0)
    assert M.mean_notes_per_bar(notes) == 5.0
    chord = M.notes_from_arrays([0, 0, 0, 0], [1, 1, 1, 1], [60, 64, 67, 72])
    assert M.polyphony(chord) == 4.0


def test_distribution_of_real_chorales(chorales):
    for notes in chorales.values():
        d = M.distribution(notes)
        assert set(d) == set(M.DISTRIBUTION_METRICS)
        assert 2.0 < d["pitch_class_entropy"] < math.log2(12)
        assert d["scale_consistency"] > 0.8  # tonal music
        assert 0.5 < d["groove_consistency"] <= 1.0
        assert 3.5 <= d["polyphony"] <= 6.0  # four voices (five parts in a few)
        assert d["notes_per_bar"] > 5
