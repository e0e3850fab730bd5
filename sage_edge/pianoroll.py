"""A piano-roll picture of a score: time across, pitch up, one colour per track.

matplotlib is an optional dependency (`pip install "sage-edge[plot]"`): a Raspberry Pi that only
generates music does not need it.
"""

from __future__ import annotations

from pathlib import Path

import symusic

# General MIDI program families, for the legend (program // 8).
_GM_FAMILIES = (
    "Piano",
    "Chromatic percussion",
    "Organ",
    "Guitar",
    "Bass",
    "Strings",
    "Ensemble",
    "Brass",
    "Reed",
    "Pipe",
    "Synth lead",
    "Synth pad",
    "Synth effects",
    "Ethnic",
    "Percussive",
    "Sound effects",
)
_GM_NAMES = {
    0: "Acoustic grand piano",
    19: "Church organ",
    40: "Violin",
    41: "Viola",
    42: "Cello",
    43: "Contrabass",
    48: "String ensemble",
    52: "Choir aahs",
    53: "Voice oohs",
    54: "Synth voice",
    56: "Trumpet",
    57: "Trombone",
    60: "French horn",
    68: "Oboe",
    70: "Bassoon",
    71: "Clarinet",
    73: "Flute",
    110: "Fiddle",
}


def instrument_name(program: int, is_drum: bool = False) -> str:
    """A readable name for a General MIDI program."""
    if is_drum:
        return "Drums"
    name = _GM_NAMES.get(program, _GM_FAMILIES[program // 8])
    return f"{name} ({program})"


def plot_pianoroll(score: symusic.Score, path: str | Path, title: str | None = None) -> None:
    """Write a PNG piano roll of `score` to `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch, Rectangle
    except ImportError:
        raise ValueError('--plot needs matplotlib: pip install "sage-edge[plot]"') from None

    quarter = score.ticks_per_quarter
    figure, axes = plt.subplots(figsize=(14, 6), dpi=100)
    colours = plt.get_cmap("tab10")
    legend = []
    low, high, end = 127, 0, 0.0
    for index, track in enumerate(t for t in score.tracks if len(t.notes)):
        colour = colours(index % 10)
        for note in track.notes:
            start, length = note.time / quarter, note.duration / quarter
            axes.add_patch(Rectangle((start, note.pitch - 0.4), length, 0.8, color=colour, lw=0))
            low, high, end = min(low, note.pitch), max(high, note.pitch), max(end, start + length)
        legend.append(Patch(color=colour, label=instrument_name(track.program, track.is_drum)))
    if not legend:
        low, high, end = 60, 72, 4.0
    axes.set_xlim(0, end)
    axes.set_ylim(low - 2, high + 2)
    axes.set_xlabel("time (quarter notes)")
    axes.set_ylabel("MIDI pitch")
    # Bar lines from the score's time signatures (4/4 when it has none).
    signatures = list(score.time_signatures) or [symusic.TimeSignature(0, 4, 4)]
    for i, signature in enumerate(signatures):
        bar = signature.numerator * 4 / signature.denominator
        start = signature.time / quarter
        stop = signatures[i + 1].time / quarter if i + 1 < len(signatures) else end
        position = start
        while position <= stop:
            axes.axvline(position, color="0.85", lw=0.6, zorder=0)
            position += bar
    if legend:
        axes.legend(handles=legend, loc="upper right", fontsize="small")
    axes.set_title(title or "sage-edge")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
