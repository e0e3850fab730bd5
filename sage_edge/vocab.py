"""What a token id can mean: its kind and its attribute family (docs/format.md, "Vocabulary").

The one Python statement of these numbers; the C++ side states them in ``csrc/engine/vocab.h`` and,
for C callers, as ``sage_kind`` and ``sage_family`` in ``sage_edge.h`` (checked against each other
by ``static_assert``, and against this module by ``tests/test_vocab.py``). Plain Python: the file
format, the tokenizer and the training code all import it, and none of them needs numpy for it.
"""

from __future__ import annotations

from enum import IntEnum


class Family(IntEnum):
    """The attribute families: AS-KVHS gives each its own key/value projection."""

    SPECIAL = 0
    TIME = 1
    PROGRAM = 2
    PITCH = 3
    VELOCITY = 4
    DURATION = 5


class Kind(IntEnum):
    """What a token says; the values ``a`` and ``b`` of its vocabulary entry depend on it."""

    PAD = 0
    BOS = 1
    EOS = 2
    MASK = 3
    BAR = 4
    TIMESIG = 5  # a = numerator, b = denominator
    POSITION = 6  # a = onset within the bar in ticks
    TEMPO = 7  # a = beats per minute x 1000
    PROGRAM = 8  # a = General MIDI program, -1 = drums
    PITCH = 9  # a = MIDI pitch
    PITCH_DRUM = 10  # a = MIDI drum-map key
    VELOCITY = 11  # a = MIDI velocity
    DURATION = 12  # a = length in ticks
    OTHER = 13


# The family each kind belongs to; a model file whose table disagrees is refused.
KIND_FAMILY: dict[Kind, Family] = {
    Kind.PAD: Family.SPECIAL,
    Kind.BOS: Family.SPECIAL,
    Kind.EOS: Family.SPECIAL,
    Kind.MASK: Family.SPECIAL,
    Kind.BAR: Family.TIME,
    Kind.TIMESIG: Family.TIME,
    Kind.POSITION: Family.TIME,
    Kind.TEMPO: Family.TIME,
    Kind.PROGRAM: Family.PROGRAM,
    Kind.PITCH: Family.PITCH,
    Kind.PITCH_DRUM: Family.PITCH,
    Kind.VELOCITY: Family.VELOCITY,
    Kind.DURATION: Family.DURATION,
    Kind.OTHER: Family.SPECIAL,
}

N_FAMILIES = len(Family)
N_KINDS = len(Kind)

__all__ = ["KIND_FAMILY", "N_FAMILIES", "N_KINDS", "Family", "Kind"]
