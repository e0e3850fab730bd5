"""Music-theory measures of a piece or excerpt: voice leading, harmony, key, range, form, rhythm.

numpy only (no torch), on :class:`training.metrics.Notes`, so the measures can move to the runtime
package later. ``docs/evaluation.md`` ("Music-theory measures") defines every one; this module is
its implementation.

Shared conventions:

- drums (program −1) never count: every measure here is about pitch, except the velocity and
  duration statistics, which take every note;
- a **moment** is a distinct onset time of a pitched note; the notes **sounding** at a moment ``t``
  are those with ``onset ≤ t < onset + duration``;
- a **voice** is a General MIDI program (miditok merges tracks that share one); a voice's pitch at
  a moment is the highest of its sounding notes, so a keyboard's chords count as their top line;
- a **beat** is a quarter note;
- keys are numbered 0–11 for the major keys on C, C♯, … B and 12–23 for the minor keys on C … B.

:func:`analyze` measures one excerpt as counts; :func:`summarize` pools the counts of many
excerpts into the reported figures, so a short excerpt weighs less than a long one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.metrics import _EPS, Notes, bar_chroma

BEATS_PER_REPORT = 100.0  # parallels are reported per 100 beats
KEY_WINDOW_BARS = 16  # key stability compares consecutive windows of this many bars
# Local key in context: a bar's key found from it and this many bars on each side. One bar alone
# holds a cadence or two and reads as the dominant or the relative key even in Bach (38 % of
# 405 chorales' bars agree with their piece's key); five bars read the key a listener hears there.
KEY_CONTEXT_BARS = 2
DOUBLING_SHARE = 0.5  # two voices in octaves or unison this often are one line doubled

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first (Krumhansl 1990, table 2.1).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Scale degrees (semitones above the tonic) that belong to a key. Minor takes its natural,
# harmonic and melodic forms together: the raised sixth and seventh are part of the key.
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 9, 10, 11)

# Tertian chords as intervals above the root. Sevenths also count without their fifth, the usual
# incomplete voicing in four parts.
TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8)}
SEVENTHS = {
    "dominant 7": (0, 4, 7, 10),
    "major 7": (0, 4, 7, 11),
    "minor 7": (0, 3, 7, 10),
    "half-diminished 7": (0, 3, 6, 10),
    "diminished 7": (0, 3, 6, 9),
}
CLASH_SEMITONES = (1, 11, 13)  # minor second, major seventh, minor ninth

# Usual sounding range (lowest, highest MIDI pitch) of each General MIDI family (program // 8),
# from the instruments' orchestration compass, with the programs the corpus gives to voices and
# string parts (training/data.py: SATB → 52, 53, 54 and the bass on 42; quartets → 40, 110, 41,
# 42) overriding their family's range. Families without a fixed compass (synths, effects) accept
# the piano's range.
FAMILY_RANGES = (
    (21, 108),  # piano: A0–C8
    (36, 108),  # chromatic percussion: marimba C2 … glockenspiel C8
    (24, 96),  # organ: C1–C7
    (40, 88),  # guitar: E2–E6
    (28, 67),  # bass: E1–G4
    (28, 103),  # strings: contrabass E1 … violin G7
    (28, 103),  # ensemble
    (28, 86),  # brass: tuba … trumpet D6
    (34, 94),  # reed: bassoon B♭1 … clarinet B♭6
    (59, 108),  # pipe: flute B3 … piccolo C8
    (21, 108),  # synth lead
    (21, 108),  # synth pad
    (21, 108),  # synth effects
    (36, 96),  # ethnic
    (21, 108),  # percussive
    (21, 108),  # sound effects
)
PROGRAM_RANGES = {
    52: (60, 81),  # choir aahs = soprano: C4–A5
    53: (53, 74),  # voice oohs = alto: F3–D5
    54: (48, 69),  # synth voice = tenor: C3–A4
    40: (55, 103),  # violin: G3–G7
    110: (55, 103),  # fiddle (second violin): G3–G7
    41: (48, 88),  # viola: C3–E6
    42: (36, 81),  # cello, also the chorales' bass voice: C2–A5
    43: (28, 67),  # contrabass: E1–G4
}

# The General MIDI families that program adherence asks for, each by its first program, but the
# pipes by the flute (73): the piccolo (72) plays from D5 up, above nearly every voice of the
# corpus, so program augmentation hardly ever draws it and no model of ours learns it.
ADHERENCE_FAMILIES = {
    "piano": 0,
    "chromatic percussion": 8,
    "organ": 16,
    "guitar": 24,
    "bass": 32,
    "strings": 40,
    "ensemble": 48,
    "brass": 56,
    "reed": 64,
    "pipe": 73,
    "synth lead": 80,
    "synth pad": 88,
    "drums": -1,
}


def _mask(pitch_classes) -> int:
    """12-bit mask of a set of pitch classes."""
    m = 0
    for pc in pitch_classes:
        m |= 1 << int(pc)
    return m


def _tertian_roots() -> dict[int, list[int]]:
    """Pitch-class mask of every triad and seventh chord (also without its fifth) on every root →
    its possible roots, complete readings first (a diminished triad before the incomplete
    diminished 7th with the same notes)."""
    without_fifth = [tuple(i for i in s if i not in (6, 7, 8)) for s in SEVENTHS.values()]
    roots: dict[int, list[int]] = {}
    for intervals in [*TRIADS.values(), *SEVENTHS.values(), *without_fifth]:
        for root in range(12):
            readings = roots.setdefault(_mask((root + i) % 12 for i in intervals), [])
            if root not in readings:
                readings.append(root)
    return roots


TERTIAN_ROOTS = _tertian_roots()


# ---------------------------------------------------------------------------------------------
# Moments and voices


def _pitched(notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Onset, end, pitch and program of the pitched notes."""
    keep = notes.pitched
    onset = notes.onset[keep]
    return onset, onset + notes.duration[keep], notes.pitch[keep], notes.program[keep]


def sounding(notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The moments ``[m]``, a ``[m, n]`` mask of the pitched notes sounding at each, and those
    notes' pitches and programs ``[n]``."""
    onset, end, pitch, program = _pitched(notes)
    moments = np.unique(np.round(onset, 6))
    mask = (onset[None, :] <= moments[:, None] + _EPS) & (end[None, :] > moments[:, None] + _EPS)
    return moments, mask, pitch, program


def voice_lines(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """Programs of the voices ``[v]`` and ``[m, v]``: each voice's highest sounding pitch at each
    moment, −1 where it is silent."""
    _, mask, pitch, program = sounding(notes)
    voices = np.unique(program)
    lines = np.full((len(mask), len(voices)), -1, dtype=np.int64)
    for j, voice in enumerate(voices):
        in_voice = np.where(mask & (program == voice)[None, :], pitch[None, :], -1)
        lines[:, j] = in_voice.max(axis=1, initial=-1)
    return voices, lines


def _pitch_class_masks(notes: Notes) -> tuple[list[int], list[int], list[int]]:
    """Per moment: 12-bit mask of the sounding pitch classes, the lowest sounding pitch, and the
    number of distinct sounding pitches."""
    _, mask, pitch, _ = sounding(notes)
    classes, lowest, distinct = [], [], []
    for row in mask:
        here = np.unique(pitch[row])
        classes.append(_mask(here % 12))
        lowest.append(int(here[0]) if len(here) else -1)
        distinct.append(len(here))
    return classes, lowest, distinct


# ---------------------------------------------------------------------------------------------
# Voice leading and harmony


def parallels(notes: Notes) -> tuple[int, int, int]:
    """Parallel fifths and octaves between every pair of voices, and the pairs that are
    doublings: (fifths, octaves, doubled pairs).

    A parallel: at consecutive moments both voices sound, both move in the same direction, and
    their interval mod 12 is a fifth (7) both before and after, or an octave or unison (0) both
    before and after. A pair at an octave or unison at ``DOUBLING_SHARE`` of the moments where both
    sound is one line doubled (an instrument playing colla parte), and its octaves do not count.
    """
    _, lines = voice_lines(notes)
    fifths = octaves = doubled = 0
    for a in range(lines.shape[1]):
        for b in range(a + 1, lines.shape[1]):
            pa, pb = lines[:, a], lines[:, b]
            interval = np.abs(pa - pb) % 12
            sound = (pa >= 0) & (pb >= 0)
            both = sound[:-1] & sound[1:]
            move_a, move_b = np.diff(pa), np.diff(pb)
            together = both & (move_a != 0) & (np.sign(move_a) == np.sign(move_b))
            before, after = interval[:-1], interval[1:]
            fifths += int((together & (before == 7) & (after == 7)).sum())
            if sound.any() and np.mean(interval[sound] == 0) >= DOUBLING_SHARE:
                doubled += 1
                continue
            octaves += int((together & (before == 0) & (after == 0)).sum())
    return fifths, octaves, doubled


def semitone_clashes(notes: Notes) -> tuple[int, int]:
    """(moments where two sounding pitches are 1, 11 or 13 semitones apart, moments with at least
    two distinct sounding pitches)."""
    _, mask, pitch, _ = sounding(notes)
    clashes = with_two = 0
    for row in mask:
        here = np.unique(pitch[row])
        if len(here) < 2:
            continue
        with_two += 1
        gaps = np.abs(here[:, None] - here[None, :])
        clashes += bool(np.isin(gaps, CLASH_SEMITONES).any())
    return clashes, with_two


def chord_root(pitch_class_mask: int, bass_class: int = -1) -> int | None:
    """Root of a triad or seventh chord (possibly without its fifth) given as a 12-bit pitch-class
    mask, or None. Where the set has several readings (a diminished 7th), the bass's class wins
    if it is one of them."""
    roots = TERTIAN_ROOTS.get(pitch_class_mask)
    if not roots:
        return None
    return bass_class if bass_class in roots else roots[0]


def tertian_chords(notes: Notes) -> tuple[int, int]:
    """(moments whose pitch-class set is a triad or seventh chord, moments with at least three
    distinct sounding pitch classes)."""
    classes, _, _ = _pitch_class_masks(notes)
    chords = [m for m in classes if m.bit_count() >= 3]
    return sum(m in TERTIAN_ROOTS for m in chords), len(chords)


# ---------------------------------------------------------------------------------------------
# Key


def find_key(chroma: np.ndarray) -> int | None:
    """Krumhansl–Kessler key of a pitch-class weight vector: the key (0–11 major, 12–23 minor)
    whose rotated profile correlates best with it; None for silence or a flat vector."""
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.std() < _EPS:
        return None
    scores = [np.corrcoef(chroma, np.roll(KK_MAJOR, t))[0, 1] for t in range(12)]
    scores += [np.corrcoef(chroma, np.roll(KK_MINOR, t))[0, 1] for t in range(12)]
    return int(np.argmax(scores))


def key_name(key: int | None) -> str:
    if key is None:
        return "-"
    return f"{PITCH_NAMES[key % 12]} {'major' if key < 12 else 'minor'}"


def key_scale(key: int) -> np.ndarray:
    """``[12]`` bool: the pitch classes that belong to ``key``."""
    degrees = MAJOR_SCALE if key < 12 else MINOR_SCALE
    inside = np.zeros(12, dtype=bool)
    inside[(np.asarray(degrees) + key) % 12] = True
    return inside


def piece_key(notes: Notes) -> int | None:
    """Key of the whole excerpt from the time each pitch class sounds in its bars."""
    return find_key(bar_chroma(notes).sum(axis=0))


def bar_keys(notes: Notes, context_bars: int = 0) -> list[int | None]:
    """Key of each bar from its own sound and that of ``context_bars`` bars on each side (None
    for a bar without pitched sound)."""
    chroma = bar_chroma(notes)
    return [
        find_key(chroma[max(0, b - context_bars) : b + context_bars + 1].sum(axis=0))
        if row.sum() > 0
        else None
        for b, row in enumerate(chroma)
    ]


def out_of_key(notes: Notes, key: int | None) -> tuple[int, int]:
    """(pitched notes outside ``key``'s scale, pitched notes)."""
    pitch = notes.pitch[notes.pitched]
    if key is None:
        return 0, 0
    return int((~key_scale(key)[pitch % 12]).sum()), len(pitch)


def local_key_agreement(notes: Notes, key: int | None, context_bars: int = 0) -> tuple[int, int]:
    """(bars whose key, with ``context_bars`` on each side, is ``key``; bars with pitched sound)."""
    keys = [k for k in bar_keys(notes, context_bars) if k is not None]
    return sum(k == key for k in keys), len(keys)


def key_stability(notes: Notes, window_bars: int = KEY_WINDOW_BARS) -> tuple[int, int]:
    """(pairs of consecutive ``window_bars``-bar windows with the same key, pairs). Windows are
    whole, back to back from the first bar; a window without pitched sound has no key and breaks
    the pair."""
    chroma = bar_chroma(notes)
    n_windows = len(chroma) // window_bars
    windows = [chroma[w * window_bars : (w + 1) * window_bars] for w in range(n_windows)]
    keys = [find_key(window.sum(axis=0)) for window in windows]
    pairs = list(zip(keys[:-1], keys[1:], strict=True))
    return sum(a is not None and a == b for a, b in pairs), len(pairs)


# ---------------------------------------------------------------------------------------------
# Range, form, rhythm and dynamics


def usual_range(program: int) -> tuple[int, int]:
    """Lowest and highest usual sounding MIDI pitch of a General MIDI program."""
    return PROGRAM_RANGES.get(program, FAMILY_RANGES[program // 8])


def range_violations(notes: Notes) -> dict[int, tuple[int, int]]:
    """Per voice (program): (its notes outside its usual range, its notes)."""
    out = {}
    for program in np.unique(notes.program[notes.pitched]):
        pitch = notes.pitch[notes.program == program]
        low, high = usual_range(int(program))
        out[int(program)] = (int(((pitch < low) | (pitch > high)).sum()), len(pitch))
    return out


def final_on_tonic(notes: Notes, key: int | None) -> bool | None:
    """Whether the last moment's lowest sounding pitch, or the root of the chord sounding then,
    is ``key``'s tonic; None without pitched notes or key."""
    classes, lowest, _ = _pitch_class_masks(notes)
    if key is None or not classes:
        return None
    tonic, bass = key % 12, lowest[-1] % 12
    return bass == tonic or chord_root(classes[-1], bass) == tonic


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.round(values, 4)  # quarters: tokenizer grids are far coarser than 1e-4


def distinct_durations(notes: Notes) -> int:
    return len(np.unique(_rounded(notes.duration)))


def duration_entropy(notes: Notes) -> float:
    """Shannon entropy in bits of the note counts per distinct duration; 0 without notes."""
    if notes.n_notes == 0:
        return 0.0
    _, counts = np.unique(_rounded(notes.duration), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------------------------------------
# One excerpt, then many


@dataclass
class Analysis:
    """Every measure of one excerpt, as counts that pool across excerpts."""

    beats: float
    parallel_fifths: int
    parallel_octaves: int
    doubled_voice_pairs: int
    clash_moments: int
    two_pitch_moments: int
    tertian_moments: int
    three_class_moments: int
    out_of_key_notes: int
    pitched_notes: int
    local_key_bars: int
    keyed_bars: int
    local_key_bars_in_context: int
    key: int | None
    final_on_tonic: bool | None
    range_violations: dict[int, tuple[int, int]] = field(default_factory=dict)
    distinct_durations: int = 0
    duration_entropy: float = 0.0
    velocity_std: float = 0.0
    distinct_velocities: int = 0


def analyze(notes: Notes) -> Analysis:
    key = piece_key(notes)
    fifths, octaves, doubled = parallels(notes)
    clashes, two = semitone_clashes(notes)
    tertian, three = tertian_chords(notes)
    outside, pitched = out_of_key(notes, key)
    agree, keyed = local_key_agreement(notes, key)
    agree_in_context, _ = local_key_agreement(notes, key, KEY_CONTEXT_BARS)
    velocity = notes.velocity.astype(np.float64)
    return Analysis(
        beats=float(notes.bars[-1] - notes.bars[0]),
        parallel_fifths=fifths,
        parallel_octaves=octaves,
        doubled_voice_pairs=doubled,
        clash_moments=clashes,
        two_pitch_moments=two,
        tertian_moments=tertian,
        three_class_moments=three,
        out_of_key_notes=outside,
        pitched_notes=pitched,
        local_key_bars=agree,
        keyed_bars=keyed,
        local_key_bars_in_context=agree_in_context,
        key=key,
        final_on_tonic=final_on_tonic(notes, key),
        range_violations=range_violations(notes),
        distinct_durations=distinct_durations(notes),
        duration_entropy=duration_entropy(notes),
        velocity_std=float(velocity.std()) if len(velocity) else 0.0,
        distinct_velocities=len(np.unique(notes.velocity)),
    )


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _per_100(count: float, beats: float) -> float | None:
    return BEATS_PER_REPORT * count / beats if beats else None


def summarize(analyses: list[Analysis]) -> dict:
    """The reported figures of many excerpts: counts pooled, per-excerpt statistics averaged.
    A share without any case to count (no chord, no keyed bar) is None."""

    def total(name: str) -> float:
        return sum(getattr(a, name) for a in analyses)

    def mean(name: str) -> float | None:
        return float(np.mean([getattr(a, name) for a in analyses])) if analyses else None

    beats = total("beats")
    by_voice: dict[int, list[int]] = {}
    for a in analyses:
        for program, (outside, count) in a.range_violations.items():
            entry = by_voice.setdefault(program, [0, 0])
            entry[0] += outside
            entry[1] += count
    endings = [a.final_on_tonic for a in analyses if a.final_on_tonic is not None]
    return {
        "excerpts": len(analyses),
        "beats": total("beats"),
        "parallel_fifths_per_100_beats": _per_100(total("parallel_fifths"), beats),
        "parallel_octaves_per_100_beats": _per_100(total("parallel_octaves"), beats),
        "doubled_voice_pairs": total("doubled_voice_pairs"),
        "semitone_clash_share": _share(total("clash_moments"), total("two_pitch_moments")),
        "tertian_share": _share(total("tertian_moments"), total("three_class_moments")),
        "out_of_key_share": _share(total("out_of_key_notes"), total("pitched_notes")),
        "local_key_agreement": _share(total("local_key_bars"), total("keyed_bars")),
        "local_key_agreement_in_context": _share(
            total("local_key_bars_in_context"), total("keyed_bars")
        ),
        "final_on_tonic_rate": _share(sum(endings), len(endings)),
        "range_violation_share": _share(
            sum(v[0] for v in by_voice.values()), sum(v[1] for v in by_voice.values())
        ),
        "range_violations_by_program": {
            str(p): {"outside": v[0], "notes": v[1]} for p, v in sorted(by_voice.items())
        },
        "distinct_durations": mean("distinct_durations"),
        "duration_entropy_bits": mean("duration_entropy"),
        "velocity_std": mean("velocity_std"),
        "distinct_velocities": mean("distinct_velocities"),
        "keys": [key_name(a.key) for a in analyses],
    }


# Rows of the printed table: (key in summarize's dict, label, scale, format).
TABLE_ROWS = (
    ("parallel_fifths_per_100_beats", "parallel fifths / 100 beats", 1.0, "{:.2f}"),
    ("parallel_octaves_per_100_beats", "parallel octaves / 100 beats", 1.0, "{:.2f}"),
    ("semitone_clash_share", "semitone-clash moments %", 100.0, "{:.1f}"),
    ("tertian_share", "triad/seventh moments %", 100.0, "{:.1f}"),
    ("out_of_key_share", "notes out of key %", 100.0, "{:.1f}"),
    ("local_key_agreement", "bars in the piece's key %", 100.0, "{:.1f}"),
    (
        "local_key_agreement_in_context",
        f"... with {KEY_CONTEXT_BARS} bars each side %",
        100.0,
        "{:.1f}",
    ),
    ("final_on_tonic_rate", "ends on the tonic %", 100.0, "{:.1f}"),
    ("range_violation_share", "notes out of range %", 100.0, "{:.1f}"),
    ("distinct_durations", "distinct durations", 1.0, "{:.2f}"),
    ("duration_entropy_bits", "duration entropy (bits)", 1.0, "{:.2f}"),
    ("velocity_std", "velocity std", 1.0, "{:.2f}"),
    ("distinct_velocities", "distinct velocities", 1.0, "{:.2f}"),
)


def format_value(value, scale: float, fmt: str) -> str:
    return "-" if value is None else fmt.format(value * scale)
