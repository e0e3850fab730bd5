"""The token vocabulary: miditok REMI+ with programs, one token stream for all tracks.

Runtime side: numpy, miditok and symusic only (never torch). ``docs/data.md`` explains the chosen
configuration and the token grammar; ``docs/format.md`` (Vocabulary) defines the attribute table
that :meth:`Tokenizer.token_table` returns and the ``.sage`` file carries.

Every time signature is rewritten to a ``n/4`` signature of the same bar length (or a whole
multiple of it) before miditok sees the score. miditok measures Position and Duration in beats of
the current time signature's *denominator*, so with quarter-note beats only, every Position and
Duration id has one fixed length in ticks per quarter note and the engine needs no context to turn
tokens into notes.
"""

from __future__ import annotations

import json
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import miditok
import numpy as np
import symusic

from sage_edge.errors import MidiInputError
from sage_edge.vocab import KIND_FAMILY, Family, Kind

# miditok token type -> kind
_TYPE_KIND = {
    "PAD": Kind.PAD,
    "BOS": Kind.BOS,
    "EOS": Kind.EOS,
    "MASK": Kind.MASK,
    "Bar": Kind.BAR,
    "TimeSig": Kind.TIMESIG,
    "Position": Kind.POSITION,
    "Tempo": Kind.TEMPO,
    "Program": Kind.PROGRAM,
    "Pitch": Kind.PITCH,
    "PitchDrum": Kind.PITCH_DRUM,
    "Velocity": Kind.VELOCITY,
    "Duration": Kind.DURATION,
}

TOKEN_TABLE_DTYPE = np.dtype(
    [("family", np.uint8), ("kind", np.uint8), ("a", np.int32), ("b", np.int32)]
)

_FORMAT_TAG = "sage-edge-tokenizer"
_FORMAT_VERSION = 1

# The project's configuration (docs/data.md says why).
POSITIONS_PER_QUARTER = 12  # 16ths, 32nds rounded, and 8th/16th triplets exactly
MAX_BAR_QUARTERS = 12  # time signatures 1/4 .. 12/4
DEFAULT_CONFIG = {
    "pitch_range": (21, 108),  # the piano's A0..C8, inclusive
    "beat_res": {(0, 2): POSITIONS_PER_QUARTER, (2, 4): 4, (4, 8): 2, (8, 16): 1},
    "num_velocities": 8,
    "special_tokens": ["PAD", "BOS", "EOS", "MASK"],
    "use_velocities": True,
    "use_note_duration_programs": list(range(-1, 128)),
    "use_chords": False,
    "use_rests": False,
    "use_tempos": True,
    "use_time_signatures": True,
    "use_sustain_pedals": False,
    "use_pitch_bends": False,
    "use_programs": True,
    "use_pitchdrum_tokens": True,
    "drums_pitch_range": (27, 87),  # GM percussion map: High Q .. Open Triangle, inclusive
    "num_tempos": 16,
    "tempo_range": (40, 208),  # the metronome's range, quarter notes per minute
    "log_tempos": True,
    "time_signature_range": {4: list(range(1, MAX_BAR_QUARTERS + 1))},
    "programs": list(range(-1, 128)),
    "one_token_stream_for_programs": True,
    "program_changes": False,
    "remove_duplicated_notes": True,
    "delete_equal_successive_tempo_changes": True,
    "delete_equal_successive_time_sig_changes": True,
}

_MAX_MIDI_BYTES = 64 * 1024 * 1024


def _check_midi_bytes(data: bytes, name: str) -> None:
    """Check a Standard MIDI File's chunk structure before the C++ parser sees it.

    symusic reads truncated files leniently (or, in old versions, past their end); walking the
    chunk lengths here turns every truncation into a clear error.
    """
    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiInputError(f"{name}: not a MIDI file (no MThd header)")
    header_len = struct.unpack(">I", data[4:8])[0]
    if header_len < 6 or 8 + header_len > len(data):
        raise MidiInputError(f"{name}: truncated MIDI header")
    n_tracks = struct.unpack(">H", data[10:12])[0]
    offset = 8 + header_len
    found = 0
    while offset < len(data) and found < n_tracks:
        if offset + 8 > len(data):
            raise MidiInputError(f"{name}: truncated MIDI file (chunk header cut at {offset})")
        kind = data[offset : offset + 4]
        length = struct.unpack(">I", data[offset + 4 : offset + 8])[0]
        end = offset + 8 + length
        if end > len(data):
            raise MidiInputError(
                f"{name}: truncated MIDI file (chunk at byte {offset} needs {length} bytes, "
                f"{len(data) - offset - 8} left)"
            )
        if kind == b"MTrk":
            found += 1
        offset = end
    if found < n_tracks:
        raise MidiInputError(f"{name}: truncated MIDI file ({found} of {n_tracks} tracks)")


def load_score(path: str | os.PathLike) -> symusic.Score:
    """Read a MIDI file, raising :class:`MidiInputError` (naming the file) when it is unusable."""
    path = Path(path)
    if not path.exists():
        raise MidiInputError(f"{path}: no such file")
    if not path.is_file():
        raise MidiInputError(f"{path}: not a file")
    size = path.stat().st_size
    if size > _MAX_MIDI_BYTES:
        raise MidiInputError(f"{path}: {size} bytes, too large for a MIDI file")
    return score_from_midi_bytes(path.read_bytes(), str(path))


def score_from_midi_bytes(data: bytes, name: str = "MIDI bytes") -> symusic.Score:
    """Parse the content of a Standard MIDI File, raising :class:`MidiInputError` (naming it
    ``name``) when it is unusable."""
    if len(data) > _MAX_MIDI_BYTES:
        raise MidiInputError(f"{name}: {len(data)} bytes, too large for a MIDI file")
    _check_midi_bytes(data, name)
    try:
        score = symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError/ValueError with its own message
        raise MidiInputError(f"{name}: cannot parse MIDI ({exc})") from exc
    return score


def quarter_note_meter(numerator: int, denominator: int) -> tuple[int, int] | None:
    """The ``n/4`` meter the tokenizer writes for ``numerator/denominator``, as ``(n, k)``: one
    ``n/4`` bar spans ``k`` notated bars.

    ``num/den`` lasts ``L = 4·num/den`` quarters; ``n = k·L`` with the smallest ``k ∈ {1, 2, 4,
    8}`` making it whole (``2/2 → (4, 1)``, ``6/8 → (3, 1)``, ``3/8 → (3, 2)``, ``7/8 → (7, 2)``).
    None when that bar is longer than ``MAX_BAR_QUARTERS`` or the signature is malformed
    (``13/16`` would need ``13/4``): the tokenizer then writes ``4/4`` and its bar lines are not
    the notation's.
    """
    if numerator <= 0 or denominator <= 0:
        return None
    for k in (1, 2, 4, 8):
        quarters, remainder = divmod(4 * numerator * k, denominator)
        if not remainder:
            return (quarters, k) if 1 <= quarters <= MAX_BAR_QUARTERS else None
    return None


def normalize_time_signatures(score: symusic.Score) -> symusic.Score:
    """Rewrite every time signature as its :func:`quarter_note_meter` ``n/4`` (``4/4`` where it
    has none). Note times never change, only where Bar tokens fall. Works on a copy."""
    score = score.copy()
    new = []
    for ts in score.time_signatures:
        meter = quarter_note_meter(int(ts.numerator), int(ts.denominator))
        new.append(symusic.TimeSignature(ts.time, meter[0] if meter else 4, 4))
    score.time_signatures = symusic.core.TimeSignatureTickList(new) if new else []
    return score


class NotatedBar(NamedTuple):
    """A bar of a score's own notation, in the score's ticks."""

    start: int
    end: int
    numerator: int
    denominator: int


def notated_bar_at(score: symusic.Score, tick: int) -> NotatedBar:
    """The bar of the score's notation that holds ``tick``: bars follow each other at the length
    of the time signature in force (``4/4`` before the first), and a time signature starts a new
    bar where it stands, as MIDI readers count them."""
    signatures = sorted(
        (int(ts.time), int(ts.numerator), int(ts.denominator))
        for ts in score.time_signatures
        if ts.numerator > 0 and ts.denominator > 0
    )
    origin, numerator, denominator = 0, 4, 4
    next_change = None
    for time, num, den in signatures:
        if time > tick:
            next_change = time
            break
        origin, numerator, denominator = time, num, den
    length = Fraction(4 * score.ticks_per_quarter * numerator, denominator)
    start = origin + (tick - origin) // length * length
    end = start + length
    if next_change is not None and next_change < end:
        end = Fraction(next_change)
    return NotatedBar(round(start), round(end), numerator, denominator)


class Tokenizer:
    """miditok REMI+ tokenizer with the attribute-family table the model and engine use."""

    def __init__(self, config: miditok.TokenizerConfig):
        for den in config.time_signature_range:
            if den != 4:
                raise ValueError(
                    "only quarter-note time signatures are supported (Position and Duration "
                    f"must have one length per id), got denominator {den}"
                )
        self._remi = miditok.REMI(config)
        self._table = self._build_table()
        self._shift_tables: dict[int, np.ndarray] = {}

    # construction -------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Tokenizer:
        """The project's configuration (docs/data.md)."""
        return cls(miditok.TokenizerConfig(**DEFAULT_CONFIG))

    def to_json(self) -> str:
        """The whole configuration as JSON; :meth:`from_json` rebuilds the identical vocabulary."""
        payload = {
            "format": _FORMAT_TAG,
            "version": _FORMAT_VERSION,
            "class": "REMI",
            "miditok_config": self._remi.config.to_dict(serialize=True),
        }
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        payload = json.loads(text)
        if payload.get("format") != _FORMAT_TAG or payload.get("class") != "REMI":
            raise ValueError("not a sage-edge tokenizer configuration")
        if payload.get("version", 0) > _FORMAT_VERSION:
            raise ValueError("tokenizer configuration is newer than this sage-edge")
        raw = dict(payload["miditok_config"])
        # JSON turns tuple and integer keys into strings; restore them as miditok's own
        # TokenizerConfig.load_from_json does.
        for key in ("beat_res", "beat_res_rest"):
            raw[key] = {tuple(int(x) for x in k.split("_")): v for k, v in raw[key].items()}
        raw["time_signature_range"] = {int(k): v for k, v in raw["time_signature_range"].items()}
        raw.setdefault("additional_params", {})
        config = miditok.TokenizerConfig.from_dict(raw)
        return cls(config)

    # vocabulary ---------------------------------------------------------------------------

    @property
    def miditok(self) -> miditok.REMI:
        """The underlying miditok tokenizer."""
        return self._remi

    @property
    def vocab_size(self) -> int:
        return len(self._remi)

    @property
    def vocab(self) -> dict[str, int]:
        """Token string → id."""
        return dict(self._remi.vocab)

    @property
    def ticks_per_quarter(self) -> int:
        """Time unit of the Position and Duration values in :meth:`token_table`."""
        return int(self._remi.time_division)

    def token_strings(self) -> list[str]:
        """Token string of every id, in id order."""
        inv = {i: s for s, i in self._remi.vocab.items()}
        return [inv[i] for i in range(self.vocab_size)]

    def id_of(self, token: str) -> int:
        return int(self._remi.vocab[token])

    def token_table(self) -> np.ndarray:
        """Structured array (``TOKEN_TABLE_DTYPE``) of ``family, kind, a, b`` per id."""
        return self._table.copy()

    @property
    def families(self) -> np.ndarray:
        """Attribute family (a ``sage_edge.vocab.Family``) of every id, ``uint8[V]``."""
        return self._table["family"].copy()

    def family_of(self, ids) -> np.ndarray:
        """Attribute family of each id in ``ids`` (same shape)."""
        return self._table["family"][np.asarray(ids, dtype=np.int64)]

    def pitch_shift_table(self, semitones: int) -> np.ndarray:
        """``int32[V]`` mapping each id to itself, except Pitch ids to the Pitch ``semitones``
        away (−1 where that leaves the pitch range). PitchDrum ids never move."""
        key = int(semitones)
        table = self._shift_tables.get(key)
        if table is None:
            table = np.arange(self.vocab_size, dtype=np.int32)
            pitch_ids = np.flatnonzero(self._table["kind"] == Kind.PITCH)
            by_pitch = {int(self._table["a"][i]): int(i) for i in pitch_ids}
            for i in pitch_ids:
                table[i] = by_pitch.get(int(self._table["a"][i]) + key, -1)
            table.setflags(write=False)
            self._shift_tables[key] = table
        return table

    def _build_table(self) -> np.ndarray:
        tpq = int(self._remi.time_division)
        res = int(self._remi.config.max_num_pos_per_beat)
        # With quarter-note beats, one Position step is tpq / res ticks.
        ticks_per_pos, rem = divmod(tpq, res)
        if rem:
            raise ValueError(f"ticks per quarter {tpq} is not a multiple of {res}")
        table = np.zeros(self.vocab_size, dtype=TOKEN_TABLE_DTYPE)
        for token, i in self._remi.vocab.items():
            kind_name, _, value = token.partition("_")
            kind = _TYPE_KIND.get(kind_name, Kind.OTHER)
            a = b = 0
            if kind == Kind.TIMESIG:
                num, den = value.split("/")
                a, b = int(num), int(den)
            elif kind == Kind.POSITION:
                a = int(value) * ticks_per_pos
            elif kind == Kind.TEMPO:
                a = round(float(value) * 1000)
            elif kind in (Kind.PROGRAM, Kind.PITCH, Kind.PITCH_DRUM, Kind.VELOCITY):
                a = int(value)
            elif kind == Kind.DURATION:
                beat, pos, dres = (int(x) for x in value.split("."))
                ticks = (beat * dres + pos) * tpq
                if ticks % dres:
                    raise ValueError(f"{token} is not a whole number of ticks at {tpq} per quarter")
                a = ticks // dres
            table[i] = (KIND_FAMILY[kind], kind, a, b)
        return table

    # encoding -----------------------------------------------------------------------------

    def encode(
        self, source: str | os.PathLike | symusic.Score, name: str | None = None
    ) -> list[int]:
        """Token ids of a MIDI file or score (no BOS/EOS). Errors name the source: ``name``
        (e.g. the file a score was read from), else the path, else "the score"."""
        if isinstance(source, symusic.Score):
            score, name = source, name or "the score"
        else:
            score, name = load_score(source), name or str(source)
        if score.note_num() == 0:
            raise MidiInputError(f"{name}: the MIDI file holds no notes")
        score = normalize_time_signatures(score)
        try:
            seq = self._remi.encode(score)
        except Exception as exc:
            raise MidiInputError(f"{name}: cannot tokenize ({exc})") from exc
        if isinstance(seq, list):  # one_token_stream gives one sequence; be defensive
            seq = seq[0]
        ids = list(seq.ids)
        if not any(self._table["kind"][i] == Kind.PITCH for i in ids) and not any(
            self._table["kind"][i] == Kind.PITCH_DRUM for i in ids
        ):
            raise MidiInputError(f"{name}: no notes inside the tokenizer's pitch range")
        return ids

    def decode(self, ids) -> symusic.Score:
        """A score (``ticks_per_quarter`` ticks per quarter) from token ids.

        Special tokens are dropped; tokens miditok cannot place are ignored by miditok.
        """
        ids = [int(i) for i in ids if self._table["family"][int(i)] != Family.SPECIAL]
        return self._remi.decode(ids)

    def bar_ticks(self, numerator: int, denominator: int) -> int:
        """Length of a bar in ticks: ``num × 4 × tpq / den``."""
        return numerator * 4 * self.ticks_per_quarter // denominator


__all__ = [
    "TOKEN_TABLE_DTYPE",
    "Tokenizer",
    "NotatedBar",
    "load_score",
    "normalize_time_signatures",
    "notated_bar_at",
    "quarter_note_meter",
]
