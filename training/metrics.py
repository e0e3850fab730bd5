"""Musical-quality metrics on notes grouped into bars: NMSI and distribution statistics.

Torch-free (numpy and symusic). ``docs/evaluation.md`` defines every formula; this module is its
implementation, term by term. SAGE-Music (arXiv 2510.00395) reports an NMSI but its definition is
not public, so the four terms below are ours.

A piece (or a continuation) is a :class:`Notes`: onset, duration, pitch, velocity and program per
note, times in quarter notes, plus the bar boundaries. Build one from a ``symusic.Score`` with
:func:`notes_from_score` or from plain lists with :func:`notes_from_arrays`; :func:`slice_bars`
cuts out a range of bars.

Conventions shared by every term:

- drums (program −1) count for rhythm and density, never for pitch classes;
- a note belongs to the bar its onset falls in; its chroma weight is the time it sounds inside
  each bar it overlaps;
- the onset grid has ``GRID_PER_QUARTER`` = 4 slots per quarter note (sixteenths); a bar of ``q``
  quarters has ``4q`` slots and an onset at ``x`` quarters into the bar takes slot ``floor(4x)``;
- the cosine of two non-negative vectors is 1 when both are zero (two silent bars agree) and 0
  when only one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID_PER_QUARTER = 4  # onset grid: sixteenth notes
MAX_BAR_QUARTERS = 12  # the tokenizer's longest bar (12/4)
GRID_SLOTS = GRID_PER_QUARTER * MAX_BAR_QUARTERS  # width of every onset pattern
_EPS = 1e-9

# Pitch classes of the major scale on C; the natural minor scales use the same twelve sets.
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
DIATONIC_SETS = np.zeros((12, 12), dtype=bool)
for _tonic in range(12):
    DIATONIC_SETS[_tonic, (_MAJOR + _tonic) % 12] = True


@dataclass(frozen=True)
class Notes:
    """Notes of one piece or excerpt, times in quarter notes from its first bar line."""

    onset: np.ndarray  # float64 [n]
    duration: np.ndarray  # float64 [n]
    pitch: np.ndarray  # int64 [n], MIDI
    velocity: np.ndarray  # int64 [n]
    program: np.ndarray  # int64 [n], General MIDI program, −1 for drums
    bars: np.ndarray  # float64 [n_bars + 1], bar lines, increasing, bars[0] = 0

    @property
    def n_bars(self) -> int:
        return len(self.bars) - 1

    @property
    def n_notes(self) -> int:
        return len(self.onset)

    @property
    def bar_of_note(self) -> np.ndarray:
        """Index of the bar each note starts in (notes past the last bar line get ``n_bars``)."""
        return np.searchsorted(self.bars, self.onset + _EPS, side="right") - 1

    @property
    def pitched(self) -> np.ndarray:
        """Mask of the notes that carry a pitch class (not drums)."""
        return self.program >= 0


def notes_from_arrays(
    onset,
    duration,
    pitch,
    velocity=None,
    program=None,
    bars=None,
    bar_quarters: float = 4.0,
) -> Notes:
    """A :class:`Notes` from plain sequences. Without ``bars``, bars of ``bar_quarters`` quarters
    up to the bar holding the last onset."""
    onset = np.asarray(onset, dtype=np.float64).reshape(-1)
    n = len(onset)
    duration = np.asarray(duration, dtype=np.float64).reshape(-1)
    pitch = np.asarray(pitch, dtype=np.int64).reshape(-1)
    velocity = np.full(n, 80, np.int64) if velocity is None else np.asarray(velocity, np.int64)
    program = np.zeros(n, np.int64) if program is None else np.asarray(program, np.int64)
    if not (len(duration) == len(pitch) == len(velocity) == len(program) == n):
        raise ValueError(
            "onset, duration, pitch, velocity and program must have one entry per note"
        )
    if bars is None:
        if bar_quarters <= 0:
            raise ValueError(f"bar_quarters must be positive, got {bar_quarters}")
        n_bars = int(np.floor(onset.max() / bar_quarters + _EPS)) + 1 if n else 0
        bars = np.arange(n_bars + 1, dtype=np.float64) * bar_quarters
    bars = np.asarray(bars, dtype=np.float64)
    if bars.ndim != 1 or len(bars) < 1 or np.any(np.diff(bars) <= 0):
        raise ValueError("bars must be increasing bar lines, at least one")
    order = np.lexsort((pitch, onset))
    return Notes(onset[order], duration[order], pitch[order], velocity[order], program[order], bars)


def bar_lines(score, n_bars: int) -> np.ndarray:
    """``n_bars + 1`` bar lines (quarters) of a ``symusic.Score`` from its time signatures.

    A bar lasts ``4·numerator/denominator`` quarters of the signature in force at its start; 4/4
    before the first signature.
    """
    tpq = score.ticks_per_quarter
    changes = sorted(
        (ts.time / tpq, 4.0 * ts.numerator / ts.denominator) for ts in score.time_signatures
    )
    lines = [0.0]
    length, k = 4.0, 0
    while len(lines) < n_bars + 1:
        start = lines[-1]
        while k < len(changes) and changes[k][0] <= start + _EPS:
            length = changes[k][1]
            k += 1
        lines.append(start + length)
    return np.asarray(lines, dtype=np.float64)


def notes_from_score(score, n_bars: int | None = None) -> Notes:
    """Every note of a ``symusic.Score`` (any time unit it holds in ticks), grouped in bars.

    ``n_bars`` defaults to the bars up to the one holding the last onset; pass it when trailing
    bars are silent but count (a generated continuation of a known length).
    """
    tpq = score.ticks_per_quarter
    columns: list[list] = [[], [], [], [], []]
    for track in score.tracks:
        program = -1 if track.is_drum else int(track.program)
        for note in track.notes:
            columns[0].append(note.time / tpq)
            columns[1].append(note.duration / tpq)
            columns[2].append(note.pitch)
            columns[3].append(note.velocity)
            columns[4].append(program)
    onset = np.asarray(columns[0], dtype=np.float64)
    if n_bars is None:
        n_bars = 0
        if len(onset):  # bars last at least a quarter, so this many lines reach the last onset
            lines = bar_lines(score, int(np.ceil(onset.max())) + 1)
            n_bars = int(np.searchsorted(lines, onset.max() + _EPS, side="right"))
    return notes_from_arrays(*columns, bars=bar_lines(score, n_bars))


def slice_bars(notes: Notes, start: int, stop: int) -> Notes:
    """Bars ``start .. stop−1``: the notes starting in them, times from bar ``start``'s line."""
    if not 0 <= start <= stop <= notes.n_bars:
        raise ValueError(f"bars {start}..{stop} outside 0..{notes.n_bars}")
    bar = notes.bar_of_note
    keep = (bar >= start) & (bar < stop)
    origin = notes.bars[start]
    return Notes(
        notes.onset[keep] - origin,
        notes.duration[keep],
        notes.pitch[keep],
        notes.velocity[keep],
        notes.program[keep],
        notes.bars[start : stop + 1] - origin,
    )


# ---------------------------------------------------------------------------------------------
# Per-bar features


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two non-negative vectors: 1 if both are zero, 0 if only one is."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < _EPS and nb < _EPS:
        return 1.0
    if na < _EPS or nb < _EPS:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), 0.0, 1.0))


def bar_chroma(notes: Notes) -> np.ndarray:
    """``[n_bars, 12]``: per bar, the quarters each pitch class sounds inside that bar."""
    chroma = np.zeros((notes.n_bars, 12))
    pitched = notes.pitched
    start, end = notes.onset[pitched], notes.onset[pitched] + notes.duration[pitched]
    pitch_class = notes.pitch[pitched] % 12
    for b in range(notes.n_bars):
        overlap = np.minimum(end, notes.bars[b + 1]) - np.maximum(start, notes.bars[b])
        inside = overlap > 0
        np.add.at(chroma[b], pitch_class[inside], overlap[inside])
    return chroma


def bar_onsets(notes: Notes) -> np.ndarray:
    """``[n_bars, GRID_SLOTS]`` binary onset patterns on the sixteenth grid (zero past a bar's
    own ``4q`` slots)."""
    pattern = np.zeros((notes.n_bars, GRID_SLOTS), dtype=np.float64)
    bar = notes.bar_of_note
    inside = (bar >= 0) & (bar < notes.n_bars)
    offset = notes.onset[inside] - notes.bars[bar[inside]]
    slot = np.clip(np.floor(offset * GRID_PER_QUARTER + _EPS).astype(np.int64), 0, GRID_SLOTS - 1)
    pattern[bar[inside], slot] = 1.0
    return pattern


def bar_slots(notes: Notes) -> np.ndarray:
    """Grid slots of each bar: ``4 × its length in quarters``, at least 1."""
    return np.maximum(np.round(np.diff(notes.bars) * GRID_PER_QUARTER), 1).astype(np.int64)


def notes_per_bar(notes: Notes) -> np.ndarray:
    """``[n_bars]`` note counts by the bar each note starts in."""
    bar = notes.bar_of_note
    inside = (bar >= 0) & (bar < notes.n_bars)
    return np.bincount(bar[inside], minlength=notes.n_bars).astype(np.float64)


def _padded(rows: np.ndarray, n: int) -> np.ndarray:
    """``rows`` followed by zero rows up to ``n`` (a missing bar is a silent bar)."""
    if len(rows) >= n:
        return rows
    pad = np.zeros((n - len(rows),) + rows.shape[1:], dtype=rows.dtype)
    return np.concatenate([rows, pad])


# ---------------------------------------------------------------------------------------------
# NMSI: a generated continuation against the real one


def chroma_similarity(generated: Notes, real: Notes) -> float:
    """Mean over bars ``i < max(n_g, n_r)`` of the cosine of the two bars' chroma vectors."""
    n = max(generated.n_bars, real.n_bars)
    if n == 0:
        return 1.0
    g, r = _padded(bar_chroma(generated), n), _padded(bar_chroma(real), n)
    return float(np.mean([cosine(g[i], r[i]) for i in range(n)]))


def groove_similarity(generated: Notes, real: Notes) -> float:
    """Cosine of the two onset histograms: per grid slot, how many bars have an onset there."""
    return cosine(bar_onsets(generated).sum(axis=0), bar_onsets(real).sum(axis=0))


def self_similarity(notes: Notes) -> np.ndarray:
    """``[n_bars, n_bars]``: ``½ (cos(chroma_i, chroma_j) + cos(onsets_i, onsets_j))``."""
    chroma, onsets = bar_chroma(notes), bar_onsets(notes)
    n = notes.n_bars
    ssm = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            ssm[i, j] = ssm[j, i] = 0.5 * (
                cosine(chroma[i], chroma[j]) + cosine(onsets[i], onsets[j])
            )
    return ssm


def resize_matrix(m: np.ndarray, n: int) -> np.ndarray:
    """Nearest-neighbour resampling of a square matrix to ``n × n``: entry ``(i, j)`` takes
    ``m[⌊i·k/n⌋, ⌊j·k/n⌋]`` for a ``k × k`` input."""
    k = len(m)
    index = (np.arange(n) * k) // n
    return m[np.ix_(index, index)]


def ssm_distance(generated: Notes, real: Notes) -> float:
    """Mean absolute difference of the two self-similarity matrices, both resized to
    ``max(n_g, n_r)`` bars; 1 when exactly one side has no bars."""
    n = max(generated.n_bars, real.n_bars)
    if n == 0:
        return 0.0
    if min(generated.n_bars, real.n_bars) == 0:
        return 1.0
    g = resize_matrix(self_similarity(generated), n)
    r = resize_matrix(self_similarity(real), n)
    return float(np.mean(np.abs(g - r)))


def density_distance(generated: Notes, real: Notes) -> float:
    """Mean over bars ``i < max(n_g, n_r)`` of ``|a_i − b_i| / max(a_i, b_i)`` (0 when both bars
    are empty), ``a``, ``b`` the notes per bar."""
    n = max(generated.n_bars, real.n_bars)
    if n == 0:
        return 0.0
    a = _padded(notes_per_bar(generated), n)
    b = _padded(notes_per_bar(real), n)
    top = np.maximum(a, b)
    per_bar = np.where(top > 0, np.abs(a - b) / np.maximum(top, 1), 0.0)
    return float(per_bar.mean())


@dataclass(frozen=True)
class NMSI:
    """The four terms (each in [0, 1]) and the index ``100 × mean(terms)``."""

    chroma: float
    groove: float
    structure: float  # 1 − ssm_distance
    density: float  # 1 − density_distance

    @property
    def value(self) -> float:
        return 100.0 * 0.25 * (self.chroma + self.groove + self.structure + self.density)

    def as_dict(self) -> dict[str, float]:
        return {
            "nmsi": self.value,
            "chroma": self.chroma,
            "groove": self.groove,
            "structure": self.structure,
            "density": self.density,
        }


def nmsi(generated: Notes, real: Notes) -> NMSI:
    """Note-level musical similarity of a generated continuation to the real one (0–100)."""
    return NMSI(
        chroma=chroma_similarity(generated, real),
        groove=groove_similarity(generated, real),
        structure=1.0 - ssm_distance(generated, real),
        density=1.0 - density_distance(generated, real),
    )


# ---------------------------------------------------------------------------------------------
# Distribution metrics of one excerpt


def pitch_class_histogram(notes: Notes) -> np.ndarray:
    """Note counts per pitch class (drums left out)."""
    return np.bincount(notes.pitch[notes.pitched] % 12, minlength=12).astype(np.float64)


def pitch_class_entropy(notes: Notes) -> float:
    """Shannon entropy in bits of the pitch-class histogram (0 … log2 12 ≈ 3.585); 0 if no
    pitched note."""
    counts = pitch_class_histogram(notes)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def scale_consistency(notes: Notes) -> float:
    """Largest share of pitched notes inside one diatonic set (a major scale, which is also its
    relative natural minor); 1 if no pitched note."""
    counts = pitch_class_histogram(notes)
    total = counts.sum()
    if total == 0:
        return 1.0
    return float((DIATONIC_SETS @ counts).max() / total)


def groove_consistency(notes: Notes) -> float:
    """``1 − mean_i H(o_i, o_{i+1}) / Q_i`` over consecutive bars: ``H`` the Hamming distance of
    the onset patterns, ``Q_i`` the slots of the longer bar; 1 with fewer than two bars."""
    if notes.n_bars < 2:
        return 1.0
    onsets, slots = bar_onsets(notes), bar_slots(notes)
    distances = [
        np.abs(onsets[i] - onsets[i + 1]).sum() / max(slots[i], slots[i + 1])
        for i in range(notes.n_bars - 1)
    ]
    return float(1.0 - np.mean(distances))


def polyphony(notes: Notes) -> float:
    """Mean, over distinct onset times, of the notes sounding then (started, not yet ended)."""
    if notes.n_notes == 0:
        return 0.0
    times = np.unique(notes.onset)
    start, end = notes.onset, notes.onset + notes.duration
    sounding = (start[None, :] <= times[:, None] + _EPS) & (end[None, :] > times[:, None] + _EPS)
    return float(sounding.sum(axis=1).mean())


def mean_notes_per_bar(notes: Notes) -> float:
    return float(notes_per_bar(notes).mean()) if notes.n_bars else 0.0


DISTRIBUTION_METRICS = {
    "pitch_class_entropy": pitch_class_entropy,
    "scale_consistency": scale_consistency,
    "groove_consistency": groove_consistency,
    "polyphony": polyphony,
    "notes_per_bar": mean_notes_per_bar,
}


def distribution(notes: Notes) -> dict[str, float]:
    """Every distribution metric of one excerpt."""
    return {name: fn(notes) for name, fn in DISTRIBUTION_METRICS.items()}


__all__ = [
    "DISTRIBUTION_METRICS",
    "GRID_PER_QUARTER",
    "NMSI",
    "Notes",
    "bar_chroma",
    "bar_lines",
    "bar_onsets",
    "chroma_similarity",
    "density_distance",
    "distribution",
    "groove_consistency",
    "groove_similarity",
    "nmsi",
    "notes_from_arrays",
    "notes_from_score",
    "pitch_class_entropy",
    "polyphony",
    "scale_consistency",
    "self_similarity",
    "slice_bars",
    "ssm_distance",
]
