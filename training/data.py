"""The training corpus: multi-track MIDI from music21's collections (or any MIDI folder), split by
piece, tokenized once and cached.

    python -m training.data prepare --out data/corpus [--collections bach,monteverdi] [--workers 2]
    python -m training.data prepare --out DIR --midi-dir PATH
    python -m training.data stats --data data/corpus

Torch-free (numpy, music21, symusic, tqdm); ``docs/data.md`` documents the choices and numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import symusic

from sage_edge.errors import MidiInputError
from sage_edge.tokenizer import Tokenizer, load_score
from sage_edge.vocab import Kind

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: dynamics read into velocities, folk tunes; older caches are rebuilt
TRANSPOSE_RANGE = (-5, 6)  # semitones, inclusive, for augmentation

# General MIDI programs per voice, top part first. miditok merges tracks that share a program, so
# every voice of a piece needs its own. The lowest part always gets the bass program.
VOCAL_PROGRAMS = (52, 53, 54, 48, 49, 50, 51)  # Choir Aahs, Voice Oohs, Synth Voice, ensembles
VOCAL_BASS = 42  # Cello carries the bass line
QUARTET_PROGRAMS = (40, 110, 41)  # Violin I = Violin, Violin II = Fiddle, Viola
QUARTET_BASS = 42  # Cello
# A second part of one instrument in a score: violin → fiddle, flute → piccolo, clarinet → oboe,
# trumpet → muted trumpet, choir → voice oohs → synth voice.
SECOND_CHAIR = {40: 110, 73: 72, 71: 68, 56: 59, 52: 53, 53: 54}
KEYBOARD_PROGRAMS = range(0, 24)  # pianos, chromatic percussion, organs: staves share a track
# Folk tunes (docs/data.md, "Folk tunes"): the melody, the chords and the bass each get one of
# these, chosen by a hash of the piece id (batch-time program augmentation redraws them anyway).
FOLK_MELODY_PROGRAMS = (40, 73, 21, 71, 22)  # violin, flute, accordion, clarinet, harmonica
FOLK_CHORD_PROGRAMS = (0, 24, 25)  # acoustic grand piano, nylon guitar, steel guitar
FOLK_BASS_PROGRAMS = (32, 33)  # acoustic bass, electric bass (finger)

# Dynamics → MIDI velocity (docs/data.md, "Dynamics"): the centres of the tokenizer's 8 bins, so
# each level is one Velocity token. Unmarked music plays at mf.
DYNAMIC_VELOCITY = {
    "pppp": 15, "ppp": 15, "pp": 31, "p": 47, "mp": 63,
    "mf": 79, "f": 95, "ff": 111, "fff": 127, "ffff": 127,
}  # fmt: skip
DEFAULT_VELOCITY = DYNAMIC_VELOCITY["mf"]
# Sudden dynamics accent the notes where they stand; the level after them is the second item.
SUDDEN_DYNAMICS = {
    "sf": None, "sfz": None, "sffz": None, "fz": None, "rf": None, "rfz": None,
    "fp": "p", "sfp": "p", "sfpp": "pp",
}  # fmt: skip
ACCENT_STEP = 16  # one velocity bin: an accent mark (a marcato, or a sudden sf/fz: two)
HAIRPIN_STEP = 32  # a hairpin with no dynamic after it ends two bins from where it began

_TERMS_MUSIC21 = (
    "music21 corpus (BSD-licensed software); the encodings are distributed with the encoders' "
    "permission (music21/corpus/license.txt); no collection-specific restriction file or embedded "
    "rights statement; compositions in the public domain"
)


_TERMS_FOLK = (
    "music21 corpus (license.txt: distributed with the encoders' permission); tunes printed "
    "in the 18th-19th centuries, in the public domain; ABC transcriptions carry the transcriber's "
    "name (Z:) and no rights statement or use restriction"
)


@dataclass(frozen=True)
class Collection:
    name: str
    folder: str  # under music21/corpus
    kind: str  # "vocal", "quartet", "scored" (programs from the parts' instruments) or "folk"
    source: str
    terms: str
    exclude: tuple[str, ...] = ()  # file stems left out (not part of the repertory)


COLLECTIONS = {
    c.name: c
    for c in (
        Collection(
            "bach",
            "bach",
            "vocal",
            "J.S. Bach, four-part chorales (music21 corpus bach/, MusicXML and Humdrum)",
            _TERMS_MUSIC21,
            exclude=("bwv846",),  # The Well-Tempered Clavier prelude, a keyboard piece
        ),
        Collection(
            "monteverdi",
            "monteverdi",
            "vocal",
            "C. Monteverdi, madrigals books 3-5 (music21 corpus monteverdi/, MusicXML)",
            _TERMS_MUSIC21 + "; pieces whose file embeds a publisher's rights line are left out",
        ),
        Collection(
            "trecento",
            "trecento",
            "vocal",
            "Italian Trecento polyphony after the PMFC edition (music21 corpus trecento/)",
            _TERMS_MUSIC21,
        ),
        Collection(
            "beethoven",
            "beethoven",
            "quartet",
            "L. van Beethoven, string quartets (music21 corpus beethoven/)",
            _TERMS_MUSIC21,
        ),
        Collection(
            "mozart",
            "mozart",
            "quartet",
            "W.A. Mozart, string quartets (music21 corpus mozart/)",
            _TERMS_MUSIC21,
            exclude=("movement1_exposition",),  # K. 545, a piano sonata
        ),
        Collection(
            "haydn",
            "haydn",
            "quartet",
            "J. Haydn, string quartets (music21 corpus haydn/)",
            _TERMS_MUSIC21,
        ),
        # Songs and keyboard music: each part keeps its own instrument (a piano's staves share
        # one keyboard track), so the model meets the piano in tonal music.
        *(
            Collection(name, name, kind, source, _TERMS_MUSIC21 + extra_terms)
            for name, kind, source, extra_terms in (
                ("joplin", "scored", "S. Joplin, Maple Leaf Rag (1899), piano", ""),
                ("handel", "scored", "G.F. Handel, Lascia ch'io pianga, voice and keyboard", ""),
                ("schubert", "scored", "F. Schubert, Der Lindenbaum, voice and piano", ""),
                ("schumann_robert", "scored", "R. Schumann, quartet op. 41 no. 1, songs", ""),
                ("schumann_clara", "scored", "C. Schumann, polonaises op. 1 and a trio", ""),
                ("chopin", "scored", "F. Chopin, mazurka op. 6 no. 2 (Humdrum)", ""),
                ("cpebach", "scored", "C.P.E. Bach, keyboard sonata H. 186", ""),
                ("johnson_j_r", "scored", "J.R. Johnson, Lift Every Voice and Sing (1900)", ""),
                ("liliuokalani", "scored", "Liliʻuokalani, Aloha ʻOe (1878), voices, piano", ""),
                ("verdi", "scored", "G. Verdi, La donna è mobile, voice and piano", ""),
                ("weber", "scored", "C.M. von Weber, Concertino for clarinet", ""),
                ("lusitano", "vocal", "V. Lusitano, motet Allor che ignuda (three voices)", ""),
                (
                    "schoenberg",
                    "scored",
                    "A. Schoenberg, Six Little Piano Pieces op. 19 (1911)",
                    "; published 1913: public domain in the US, and in the EU since 2022 "
                    "(Schoenberg died 1951)",
                ),
                (
                    "webern",
                    "scored",
                    "A. Webern, Dormi Jesu op. 16 no. 2 (1924), voice, clarinet, bass clarinet",
                    "; published 1928: public domain in the US since 2024, and in the EU "
                    "since 2016 (Webern died 1945)",
                ),
            )
        ),
        # Monophonic folk tunes, realised as melody + chords + bass (docs/data.md, "Folk tunes").
        Collection(
            "nottingham",
            "nottingham-dataset",
            "folk",
            "Nottingham Music Database, the sample music21 ships (2 tunes with chord symbols)",
            _TERMS_FOLK,
        ),
        Collection(
            "leadsheet",
            "leadSheet",
            "folk",
            "lead sheets: S. Foster, Jeanie with the Light Brown Hair (melody + chord symbols)",
            _TERMS_MUSIC21 + "; files with a rights line other than 'Public Domain' are left out "
            "(Berlin's Alexander's Ragtime Band: 'All Rights Reserved')",
        ),
        Collection(
            "ryans_mammoth",
            "ryansMammoth",
            "folk",
            "Ryan's Mammoth Collection (1883) of fiddle tunes, ABC (its quoted strings are "
            "fingerings, not chords)",
            _TERMS_FOLK,
        ),
        Collection(
            "oneills_1850",
            "oneills1850",
            "folk",
            "O'Neill's Music of Ireland (1903), 1850 airs and dance tunes, ABC by N. Paap",
            _TERMS_FOLK,
        ),
        Collection(
            "airds_airs",
            "airdsAirs",
            "folk",
            "J. Aird, A Selection of Scotch, English, Irish and Foreign Airs (1778-1803), ABC by "
            "J. Campin",
            _TERMS_FOLK,
        ),
        Collection(
            "misc_folk",
            "miscFolk",
            "folk",
            "American fife music and Northumbrian Minstrelsy (1882), ABC by J. Campin",
            _TERMS_FOLK + "; the multi-voice fife tunes are not monophonic and are left out",
        ),
    )
}
DEFAULT_COLLECTIONS = tuple(COLLECTIONS)

# Collections music21 ships that we leave out, and why (also written to the manifest).
EXCLUDED_COLLECTIONS = {
    "palestrina": "Humdrum encodings (c) 2000 John Miller: 'Rights to all derivative electronic "
    "formats reserved' (embedded !!!YEM line)",
    "essenFolksong": "Essen folk songs: permission for non-commercial distribution and use only "
    "(essenFolksong/license.txt); also monophonic",
    "josquin": "ABC encodings (c) 1999 Laura E. Conrad under the GNU GPL v2: copyleft terms we "
    "do not extend to trained weights",
    "beach": "engraving (c) 2017 M.S. Cuthbert under CC BY-SA (share-alike); embedded rights line",
    "corelli": "encoding (c) 2014 under a Creative Commons licence; embedded rights line",
    "ciconia": "(c) 2010 M.S. Cuthbert, CC BY-SA 3.0 (share-alike); embedded rights line",
    "luca": "(c) 2010 M.S. Cuthbert, CC BY-SA 3.0 (share-alike); embedded rights line",
    "demos": "music21's demonstration and test files (layout tests, a chord-symbol test file)",
    "theoryExercises": "textbook exercises (a triad drill, a checker demo), not repertory",
}

_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
_MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")


# ---------------------------------------------------------------------------------------------
# Pieces, identities, splits


@dataclass(frozen=True)
class Piece:
    """One work to convert: where it comes from and where its MIDI goes."""

    id: str  # unique, path-like, e.g. "bach/bwv269"
    collection: str
    source: str
    identity: str  # pieces sharing an identity share a split
    kind: str  # a Collection's kind, or "midi"
    tune: int | None = None  # the tune's reference number (X:) in a file of ABC tunes


def identity_of(collection: str, stem: str) -> str:
    """A normalized identity: versions of one work map to the same string.

    Bach: ``bwv248.23-2``, ``bwv248.23-s`` and ``bwv248.23`` (and the ``.krn`` twin of an
    ``.mxl``) are versions of one chorale harmonisation.
    """
    s = stem.lower().strip()
    s = re.sub(r"\s+", " ", s)
    if collection == "bach":
        s = s.split("-")[0]
    return f"{collection}/{s}"


def split_bucket(identity: str) -> int:
    """0..99 from the sha1 of the identity: < 90 train, < 95 valid, else test."""
    return int(hashlib.sha1(identity.encode("utf-8")).hexdigest()[:8], 16) % 100


def split_of(identity: str) -> str:
    """train/valid/test ≈ 90/5/5 from the sha1 of the identity (never random state)."""
    bucket = split_bucket(identity)
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def _music21_corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def embedded_rights(path: Path) -> str:
    """The rights statement a score file carries, with empty boilerplate ("Copyright ©") removed."""
    try:
        if path.suffix == ".mxl":
            with zipfile.ZipFile(path) as z:
                text = "".join(
                    z.read(n).decode("utf-8", "replace")
                    for n in z.namelist()
                    if n.endswith(".xml") and not n.startswith("META-INF")
                )
        else:
            text = path.read_text("utf-8", errors="replace")
    except (OSError, zipfile.BadZipFile):
        return ""
    found = re.findall(r"<rights[^>]*>([^<]*)</rights>", text)
    found += re.findall(r"^!!!(?:YEM|YEC)[^:]*:(.*)$", text, flags=re.MULTILINE)
    rest = []
    for r in found:
        bare = re.sub(r"(?i)copyright|\(c\)|©|[\d\s.,]", "", r)
        if bare and not re.search(r"(?i)public domain", r):  # a public-domain notice is no bar
            rest.append(r.strip())
    return "; ".join(rest)


def abc_tune_numbers(path: Path) -> list[int]:
    """The reference numbers (``X:``) of the tunes in an ABC file, in file order, each once."""
    numbers = re.findall(r"^X:\s*(\d+)", path.read_text("utf-8", errors="replace"), re.MULTILINE)
    return list(dict.fromkeys(int(n) for n in numbers))


def collection_pieces(name: str, corpus_dir: Path | None = None) -> tuple[list[Piece], list]:
    """The pieces of a music21 collection and the files left out (with reasons)."""
    coll = COLLECTIONS[name]
    root = (corpus_dir or _music21_corpus_dir()) / coll.folder
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in _SCORE_SUFFIXES and p.is_file()
    )
    by_id: dict[str, Path] = {}
    skipped = []
    for p in files:
        rel = p.relative_to(root).with_suffix("")
        piece_id = f"{name}/{rel.as_posix()}"
        if p.stem in coll.exclude:
            skipped.append({"source": str(p), "reason": "not part of the repertory"})
            continue
        if piece_id in by_id:  # the same work in two encodings: keep the MusicXML one
            keep = by_id[piece_id] if by_id[piece_id].suffix != ".krn" else p
            drop = p if keep is by_id[piece_id] else by_id[piece_id]
            by_id[piece_id] = keep
            skipped.append({"source": str(drop), "reason": f"duplicate encoding of {keep.name}"})
            continue
        by_id[piece_id] = p
    pieces = []
    for piece_id, p in sorted(by_id.items()):
        rights = embedded_rights(p)
        if rights:
            skipped.append({"source": str(p), "reason": f"embedded rights statement: {rights}"})
            continue
        stem = piece_id.split("/", 1)[1]
        if p.suffix == ".abc":  # a file of tunes: one piece per tune
            for number in abc_tune_numbers(p):
                tune_id = f"{piece_id}/{number}"
                identity = identity_of(name, f"{stem}/{number}")
                pieces.append(Piece(tune_id, name, str(p), identity, coll.kind, number))
        else:
            pieces.append(Piece(piece_id, name, str(p), identity_of(name, stem), coll.kind))
    return pieces, skipped


def midi_dir_pieces(root: Path) -> list[Piece]:
    """Every MIDI file under ``root``; identity = relative path without suffix."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in _MIDI_SUFFIXES:
            rel = p.relative_to(root).with_suffix("").as_posix()
            safe = re.sub(r"[^A-Za-z0-9_.\-/]", "_", rel)
            out.append(Piece(f"midi/{safe}", "midi", str(p), identity_of("midi", rel), "midi"))
    return out


# ---------------------------------------------------------------------------------------------
# Conversion (runs in worker processes)


def programs_for(kind: str, n_parts: int) -> list[int]:
    """GM program of each part, top first; the lowest part gets the bass program."""
    upper, bass = (
        (QUARTET_PROGRAMS, QUARTET_BASS) if kind == "quartet" else (VOCAL_PROGRAMS, VOCAL_BASS)
    )
    if n_parts == 1:
        return [upper[0]]
    if n_parts - 1 > len(upper):
        raise ValueError(f"{n_parts} parts, more than the {len(upper) + 1} programs we assign")
    return [*upper[: n_parts - 1], bass]


def scored_programs(parts: list) -> list[int]:
    """GM program of each part of a song or keyboard score, from the part's instrument.

    Keyboard parts (a piano's two staves) keep their keyboard program and so share one track;
    any other part keeps its instrument's program unless an earlier part took it (two "Voice"
    parts), then it gets the first free vocal program, so no two voices merge.
    """
    taken: set[int] = set()
    programs = []
    for part in parts:
        instrument = part.getInstrument(returnDefault=False)
        program = instrument.midiProgram if instrument is not None else None
        names = f"{part.partName or ''} {instrument.instrumentName if instrument else ''}".lower()
        if program is None and re.search(r"piano|keyboard|cembalo|harpsichord|organ", names):
            program = 0
        if program is not None and program in KEYBOARD_PROGRAMS:
            programs.append(program)
            continue
        if program in taken and SECOND_CHAIR.get(program) not in taken | {None}:
            program = SECOND_CHAIR[program]  # a second violin plays the fiddle program
        if program is None or program in taken:
            spare = [p for p in (*VOCAL_PROGRAMS, VOCAL_BASS) if p not in taken]
            if not spare:
                raise ValueError(f"{len(parts)} parts, more than the programs we assign")
            program = spare[0]
        taken.add(program)
        programs.append(program)
    return programs


class Dynamics:
    """The notated loudness of one part as MIDI velocities (docs/data.md, "Dynamics").

    Dynamic marks set a level (``DYNAMIC_VELOCITY``) from where they stand; a hairpin ramps
    linearly from the level at its start to the next mark after it (or two bins up or down when
    none follows); sudden marks (sf, fz, fp, ...) and accent marks raise their notes.
    """

    def __init__(self, score, part):
        from music21 import dynamics, stream
        from music21.sites import SitesException

        levels: list[tuple[float, int]] = []
        self.sudden: set[float] = set()
        for mark in part.flatten().getElementsByClass(dynamics.Dynamic):
            value, offset = str(mark.value).strip(), float(mark.offset)
            if value in SUDDEN_DYNAMICS:
                self.sudden.add(offset)
                value = SUDDEN_DYNAMICS[value]
            if value in DYNAMIC_VELOCITY:
                levels.append((offset, DYNAMIC_VELOCITY[value]))
        levels.sort()
        self.ramps: list[tuple[float, float, int, int]] = []
        for wedge in score.spannerBundle.getByClass(dynamics.DynamicWedge):
            first, last = wedge.getFirst(), wedge.getLast()
            if first is None or first.getContextByClass(stream.Part) is not part:
                continue
            try:  # offsets in the score: a piano's hairpin may end on the other staff
                start = float(first.getOffsetInHierarchy(score))
                end = float(last.getOffsetInHierarchy(score) + last.quarterLength)
            except SitesException:  # an end outside the score's parts: the hairpin is unreadable
                continue
            if end <= start:
                continue
            begin = self._level(levels, start)
            after = [v for t, v in levels if start < t <= end + 4.0]  # the mark that answers it
            step = HAIRPIN_STEP if isinstance(wedge, dynamics.Crescendo) else -HAIRPIN_STEP
            target = after[0] if after else int(np.clip(begin + step, 1, 127))
            if not after:  # the hairpin's end level holds until the next mark
                levels.append((end, target))
                levels.sort()
            self.ramps.append((start, end, begin, target))
        self.levels = levels

    @staticmethod
    def _level(levels: list[tuple[float, int]], offset: float) -> int:
        level = DEFAULT_VELOCITY
        for t, v in levels:
            if t > offset + 1e-6:
                break
            level = v
        return level

    def level(self, offset: float) -> int:
        """The velocity of an unaccented note starting at ``offset`` (quarters in the part)."""
        for start, end, begin, target in self.ramps:
            if start <= offset < end:
                return round(begin + (target - begin) * (offset - start) / (end - start))
        return self._level(self.levels, offset)

    def velocity(self, note) -> int:
        """The velocity of a note of this part: its level plus its accents, in 1..127."""
        if note.volume.velocity:  # the encoding gives one: keep it
            return int(note.volume.velocity)
        offset = float(note.offset)
        velocity = self.level(offset)
        names = {type(a).__name__ for a in note.articulations}
        if "StrongAccent" in names or any(abs(offset - t) < 1e-6 for t in self.sudden):
            velocity += 2 * ACCENT_STEP
        elif "Accent" in names:
            velocity += ACCENT_STEP
        return int(np.clip(velocity, 1, 127))


def _parse_score(source: str, tune: int | None = None):
    import music21

    if tune is not None:  # one tune of a file of ABC tunes (X: 0 is a tune too)
        return music21.converter.parse(source, number=tune)
    return music21.converter.parse(source)


def _anacrusis(parts: list) -> float:
    """Quarters of silence before a pickup bar, so that bars line up with the notation."""
    first_measure = parts[0].getElementsByClass("Measure").first() if parts else None
    return float(first_measure.paddingLeft) if first_measure is not None else 0.0


def _part_track(part, program: int, name: str, tick, dynamics: Dynamics) -> symusic.Track:
    """One part's notes (ties merged, grace notes dropped) at their notated loudness."""
    from music21 import harmony

    track = symusic.Track(name, program, False)
    for n in part.stripTies().flatten().notes:
        if isinstance(n, harmony.Harmony):  # a chord symbol is not a note of the part
            continue
        duration = tick(n.offset + n.quarterLength) - tick(n.offset)
        if duration <= 0:  # grace notes
            continue
        velocity = dynamics.velocity(n)
        for p in n.pitches:
            track.notes.append(symusic.Note(tick(n.offset), duration, int(p.midi), velocity))
    return track


def _meters_and_tempos(score, first_part, out: symusic.Score, tick) -> None:
    """The score's time signatures (from its first part) and metronome marks (120 if none)."""
    for ts in first_part.flatten().getElementsByClass("TimeSignature"):
        out.time_signatures.append(
            symusic.TimeSignature(tick(ts.offset), ts.numerator, ts.denominator)
        )
    seen_tempo = False
    for start, _end, mm in score.metronomeMarkBoundaries():
        bpm = mm.getQuarterBPM()
        if bpm and bpm > 0:
            out.tempos.append(symusic.Tempo(0 if not seen_tempo else tick(start), float(bpm)))
            seen_tempo = True
    if not seen_tempo:
        out.tempos.append(symusic.Tempo(0, 120.0))


def score_to_midi(
    source: str, kind: str, out_path: Path, tpq: int = 480, tune: int | None = None
) -> None:
    """Convert one notated score to a multi-track MIDI file, one track and program per part.

    Built from music21's notes directly (not music21's MIDI writer, which can add empty tracks
    and channel games): ties merged, an anacrusis padded so bars line up with the notation,
    time signatures and metronome marks of the score kept, dynamics read into velocities.
    """
    score = _parse_score(source, tune)
    parts = list(score.parts)
    if not parts:
        raise ValueError("no parts")
    if kind == "quartet" and len(parts) != 4:
        raise ValueError(f"{len(parts)} parts, not a string quartet")
    programs = scored_programs(parts) if kind == "scored" else programs_for(kind, len(parts))
    pad = _anacrusis(parts)

    def tick(q) -> int:
        return round((float(q) + pad) * tpq)

    out = symusic.Score(tpq)
    for part, program in zip(parts, programs, strict=True):
        track = _part_track(part, program, part.partName or f"part{program}", tick,
                            Dynamics(score, part))  # fmt: skip
        if len(track.notes):
            out.tracks.append(track)
    _meters_and_tempos(score, parts[0], out, tick)
    out.dump_midi(str(out_path))


# ---------------------------------------------------------------------------------------------
# Folk tunes: a melody realised as melody + chords + bass (docs/data.md, "Folk tunes")

CHORD_REGISTER = (55, 67)  # G3 .. F#4, close position (or 3 semitones lower or higher)
BASS_REGISTER = (36, 48)  # C2 .. B2
# Diatonic chords tried where a tune has no chord symbols, with a prior that favours the
# primary triads (a tie between I and vi goes to I).
MAJOR_CHORDS = {"I": 0.5, "V": 0.4, "IV": 0.3, "vi": 0.15, "ii": 0.1}
MINOR_CHORDS = {"i": 0.5, "V": 0.4, "iv": 0.3, "VI": 0.15, "III": 0.1, "VII": 0.1}
PRIOR_WEIGHT = 0.25  # quarters of melody a prior of 1.0 is worth, per quarter of span


@dataclass(frozen=True)
class ChordSpan:
    start: float  # quarters in the tune
    end: float
    pitch_classes: tuple[int, ...]  # root first (root, third, fifth[, seventh])
    bass: int  # pitch class of the bass (the root, or a slash chord's bass)


def in_register(pitch_class: int, register: tuple[int, int]) -> int:
    """The MIDI pitch of ``pitch_class`` in ``[low, low + 12)``."""
    low = register[0]
    return low + (pitch_class - low) % 12


def chord_symbol_spans(melody) -> list[ChordSpan]:
    """The tune's own chord symbols, each lasting until the next (none: an empty list)."""
    from music21 import harmony

    symbols = [
        (float(c.offset), c)
        for c in melody.flatten().getElementsByClass(harmony.ChordSymbol)
        if not isinstance(c, harmony.NoChord) and c.pitches
    ]
    if len(symbols) < 2:
        return []
    end = float(melody.highestTime)
    spans = []
    for i, (start, symbol) in enumerate(symbols):
        stop = symbols[i + 1][0] if i + 1 < len(symbols) else end
        if stop <= start:
            continue
        root = symbol.root().pitchClass
        rest = [p.pitchClass for p in symbol.pitches if p.pitchClass != root]
        pcs = tuple(dict.fromkeys([root, *rest]))
        spans.append(ChordSpan(start, stop, pcs, symbol.bass().pitchClass))
    return spans


def tune_key(melody):
    """The tune's key: its key signature's mode (ABC ``K:``), else the Krumhansl estimate."""
    from music21 import key

    flat = melody.flatten()
    found = flat.getElementsByClass(key.Key).first()
    if found is not None:
        return found
    signature = flat.getElementsByClass(key.KeySignature).first()
    return signature.asKey("major") if signature is not None else melody.analyze("key")


def harmonised_spans(melody, tune_key_) -> list[ChordSpan]:
    """One diatonic chord per bar (per half bar in bars of four beats), chosen by the melody.

    Each candidate scores the quarters of melody it holds (a note on the span's first beat
    counts twice) plus its prior; the last span is the tonic; a span with no notes keeps the
    chord before it.
    """
    from music21 import roman

    minor = tune_key_.mode == "minor"
    candidates = []
    for figure, prior in (MINOR_CHORDS if minor else MAJOR_CHORDS).items():
        chord = roman.RomanNumeral(figure, tune_key_)
        root = chord.root().pitchClass
        pcs = tuple(dict.fromkeys([root, *(p.pitchClass for p in chord.pitches)]))
        candidates.append((pcs, prior))
    tonic = candidates[0][0]
    notes = [(float(n.offset), float(n.offset + n.quarterLength), n) for n in
             melody.stripTies().flatten().notes]  # fmt: skip
    bounds = []
    for measure in melody.getElementsByClass("Measure"):
        start, length = float(measure.offset), float(measure.duration.quarterLength)
        if length <= 0:
            continue
        signature = measure.getContextByClass("TimeSignature")
        beats = signature.beatCount if signature is not None else 1
        full = signature is not None and length >= signature.barDuration.quarterLength - 1e-6
        if full and beats == 4:
            bounds += [(start, start + length / 2), (start + length / 2, start + length)]
        else:
            bounds.append((start, start + length))
    if not bounds:
        raise ValueError("no bars to harmonise")
    spans = []
    previous = tonic
    for i, (start, end) in enumerate(bounds):
        weight = np.zeros(12)
        for onset, offset, n in notes:
            overlap = min(offset, end) - max(onset, start)
            if overlap > 0:
                for p in n.pitches:
                    weight[p.pitchClass] += overlap * (2 if abs(onset - start) < 1e-6 else 1)
        if i == len(bounds) - 1:
            chosen = tonic
        elif not weight.any():
            chosen = previous
        else:
            scores = [
                weight[list(pcs)].sum() + prior * PRIOR_WEIGHT * (end - start)
                for pcs, prior in candidates
            ]
            chosen = candidates[int(np.argmax(scores))][0]
        spans.append(ChordSpan(start, end, chosen, chosen[0]))
        previous = chosen
    return spans


def folk_programs(piece_id: str) -> tuple[int, int, int]:
    """(melody, chords, bass) programs of a folk tune, fixed by a hash of its id."""
    h = int(hashlib.sha1(piece_id.encode("utf-8")).hexdigest()[:8], 16)
    return (
        FOLK_MELODY_PROGRAMS[h % len(FOLK_MELODY_PROGRAMS)],
        FOLK_CHORD_PROGRAMS[(h // 8) % len(FOLK_CHORD_PROGRAMS)],
        FOLK_BASS_PROGRAMS[(h // 64) % len(FOLK_BASS_PROGRAMS)],
    )


class _Line:
    """One voice's notes in quarters, to ask what it sounds at a moment (its highest pitch, as
    ``training.music_theory`` reads a voice)."""

    def __init__(self, notes: list[tuple[float, float, int]] | None = None):
        self.notes = notes or []  # (onset, end, pitch)

    def at(self, moment: float) -> int | None:
        sounding = [p for onset, end, p in self.notes if onset <= moment + 1e-6 < end]
        return max(sounding) if sounding else None


def _parallel(voice: _Line, pitch: int, other: _Line, other_pitch: int | None, t: float) -> bool:
    """Would ``voice`` playing ``pitch`` at ``t`` move in parallel fifths or octaves with
    ``other`` (sounding ``other_pitch`` at ``t``) from the moment before?"""
    before, other_before = voice.at(t - 1e-3), other.at(t - 1e-3)
    if before is None or other_before is None or other_pitch is None:
        return False
    move, other_move = pitch - before, other_pitch - other_before
    if move == 0 or other_move == 0 or (move > 0) != (other_move > 0):
        return False
    interval, interval_before = abs(pitch - other_pitch) % 12, abs(before - other_before) % 12
    return interval == interval_before and interval in (0, 7)


def tune_to_midi(source: str, tune: int, piece_id: str, out_path: Path, tpq: int = 480) -> None:
    """A monophonic tune as three tracks: the melody, its chords on every beat (keyboard or
    guitar) and a bass (the chord's bass on the span's first beat, its fifth at the middle beat
    of an even number of beats). Chords are the tune's chord symbols where it has them, else
    :func:`harmonised_spans`. The bass and the chords' top note avoid parallel fifths and
    octaves with the voices above them (another chord tone for the bass, another voicing for the
    chords), so the accompaniment does not teach what a musician would correct."""
    score = _parse_score(source, tune)
    parts = list(score.parts) or [score]
    if len(parts) != 1:
        raise ValueError(f"{len(parts)} voices, not a monophonic tune")
    melody = parts[0]
    spans = chord_symbol_spans(melody) or harmonised_spans(melody, tune_key(melody))
    pad = _anacrusis(parts)

    def tick(q) -> int:
        return round((float(q) + pad) * tpq)

    tune_line = _Line(
        [
            (float(n.offset), float(n.offset + n.quarterLength), max(p.midi for p in n.pitches))
            for n in melody.stripTies().flatten().notes
            if n.quarterLength > 0
        ]
    )
    dynamics = Dynamics(score, melody)
    bass, chord_tops = _Line(), _Line()
    bass_notes, chord_notes = [], []  # (onset, end, pitch, velocity)
    signatures = melody.flatten().getElementsByClass("TimeSignature")
    for span in spans:
        signature = signatures.getElementsByOffset(0, span.start, includeEndBoundary=True).last()
        beat = float(signature.beatDuration.quarterLength) if signature is not None else 1.0
        onsets = [float(t) for t in np.arange(span.start, span.end - 1e-6, beat)]
        level = dynamics.level(span.start)
        bass_plan = {onsets[0]: span.bass}
        if len(onsets) % 2 == 0 and len(span.pitch_classes) >= 3:
            bass_plan[onsets[len(onsets) // 2]] = span.pitch_classes[2]
        for onset in onsets:
            end = min(onset + beat, span.end)
            melody_now = tune_line.at(onset)
            if onset in bass_plan:
                choices = [bass_plan[onset], *span.pitch_classes]
                pitches = [in_register(pc, BASS_REGISTER) for pc in choices]
                low = next(
                    (p for p in pitches if not _parallel(bass, p, tune_line, melody_now, onset)),
                    pitches[0],
                )
                bass.notes.append((onset, end, low))
                bass_notes.append((onset, end, low, level))
            voicings = [
                sorted(in_register(pc, (bottom, bottom + 12)) for pc in span.pitch_classes)
                for bottom in (CHORD_REGISTER[0], CHORD_REGISTER[0] - 3, CHORD_REGISTER[0] + 3)
            ]
            bass_now = bass.at(onset)
            chosen = next(
                (
                    v
                    for v in voicings
                    if not _parallel(chord_tops, v[-1], tune_line, melody_now, onset)
                    and not _parallel(chord_tops, v[-1], bass, bass_now, onset)
                ),
                voicings[0],
            )
            chord_tops.notes.append((onset, end, chosen[-1]))
            chord_notes += [(onset, end, p, level - ACCENT_STEP) for p in chosen]

    melody_program, chord_program, bass_program = folk_programs(piece_id)
    out = symusic.Score(tpq)
    out.tracks.append(_part_track(melody, melody_program, "melody", tick, dynamics))
    for name, program, notes in (("chords", chord_program, chord_notes),
                                 ("bass", bass_program, bass_notes)):  # fmt: skip
        track = symusic.Track(name, program, False)
        for onset, end, pitch, velocity in notes:
            track.notes.append(symusic.Note(tick(onset), tick(end) - tick(onset), pitch, velocity))
        out.tracks.append(track)
    _meters_and_tempos(score, melody, out, tick)
    out.dump_midi(str(out_path))


_TOKENIZER: Tokenizer | None = None


def _tokenizer() -> Tokenizer:
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = Tokenizer.default()
    return _TOKENIZER


def _describe(midi_path: Path, tokenizer: Tokenizer) -> dict:
    """Validate a MIDI file by tokenizing it; the numbers the manifest keeps."""
    ids = tokenizer.encode(midi_path)
    kinds = tokenizer.token_table()["kind"][np.asarray(ids)]
    score = load_score(midi_path)
    return {
        "n_tokens": len(ids),
        "n_notes": int(np.count_nonzero((kinds == Kind.PITCH) | (kinds == Kind.PITCH_DRUM))),
        "seconds": round(float(score.to("second").end()), 3),
        "programs": sorted({int(t.program) if not t.is_drum else -1 for t in score.tracks}),
    }


def convert_piece(piece: Piece, out_dir: str) -> dict:
    """Convert (or copy) one piece, validate it, return its manifest record (never raises)."""
    out_dir = Path(out_dir)
    midi_rel = Path("midi") / f"{piece.id}.mid"
    midi_path = out_dir / midi_rel
    record = asdict(piece) | {"midi": midi_rel.as_posix()}
    t0 = time.perf_counter()
    try:
        midi_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = midi_path.with_name(midi_path.name + f".tmp{os.getpid()}")
        if piece.kind == "midi":
            load_score(piece.source)  # refuse before copying
            shutil.copyfile(piece.source, tmp)
        elif piece.kind == "folk":
            tune_to_midi(piece.source, piece.tune, piece.id, tmp)
        else:
            score_to_midi(piece.source, piece.kind, tmp, tune=piece.tune)
        record |= _describe(tmp, _tokenizer())
        os.replace(tmp, midi_path)
        record["ok"] = True
    except Exception as exc:  # keep going past any failure; it is listed in the manifest
        for leftover in midi_path.parent.glob(midi_path.name + ".tmp*"):
            leftover.unlink(missing_ok=True)
        reason = str(exc) if isinstance(exc, MidiInputError) else f"{type(exc).__name__}: {exc}"
        record |= {"ok": False, "error": reason}
    record["convert_seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _convert_star(args):
    return convert_piece(*args)


# ---------------------------------------------------------------------------------------------
# prepare


def _content_key(midi_path: Path) -> str:
    """Hash of the notes (pitch, onset in sixteenths) regardless of program: exact duplicates."""
    score = load_score(midi_path)
    tpq = score.ticks_per_quarter
    notes = sorted((round(n.time * 4 / tpq), n.pitch) for t in score.tracks for n in t.notes)
    return hashlib.sha1(repr(notes).encode()).hexdigest()


def assign_splits(records: list[dict], out_dir: Path) -> None:
    """Give each record its split; identical note content joins the same identity."""
    groups: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r["identity"]):
        if not r.get("ok"):
            continue
        key = r.get("content_sha1") or _content_key(out_dir / r["midi"])
        r["content_sha1"] = key
        r["split_identity"] = groups.setdefault(key, r["identity"])
    by_identity: dict[str, str] = {}
    for r in records:
        if r.get("ok"):
            # versions by name and duplicates by content are linked: the smallest identity wins
            by_identity.setdefault(r["identity"], r["split_identity"])
            by_identity[r["identity"]] = min(by_identity[r["identity"]], r["split_identity"])
    for r in records:
        if r.get("ok"):
            r["split"] = split_of(by_identity[r["identity"]])
    # A folder of fewer than about 20 works rarely draws a valid piece from the 5 % share, and
    # training needs one: the train group hashed nearest the valid range moves there (only when
    # another group stays in train), so any folder of two or more works can be fine-tuned on.
    ok = [r for r in records if r.get("ok")]
    train_groups = {by_identity[r["identity"]] for r in ok if r["split"] == "train"}
    if len(train_groups) > 1 and not any(r["split"] == "valid" for r in ok):
        moved = max(train_groups, key=lambda g: (split_bucket(g), g))
        for r in ok:
            if by_identity[r["identity"]] == moved:
                r["split"] = "valid"


def _load_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def prepare(
    out_dir: str | os.PathLike,
    collections: Iterable[str] | None = DEFAULT_COLLECTIONS,
    midi_dir: str | os.PathLike | None = None,
    workers: int = 1,
    limit: int | None = None,
    progress: bool = True,
    corpus_dir: Path | None = None,
) -> dict:
    """Convert the chosen collections (and/or a MIDI folder) into ``out_dir``; write the manifest.

    A second run skips pieces whose MIDI file and record already exist (the cache).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pieces: list[Piece] = []
    skipped: list[dict] = []
    sources = {}
    for name in collections or ():
        if name not in COLLECTIONS:
            raise ValueError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}")
        got, left_out = collection_pieces(name, corpus_dir)
        got = got[:limit] if limit else got
        pieces += got
        skipped += left_out
        c = COLLECTIONS[name]
        sources[name] = {"source": c.source, "terms": c.terms, "kind": c.kind}
    if midi_dir is not None:
        got = midi_dir_pieces(Path(midi_dir))
        pieces += got[:limit] if limit else got
        sources["midi"] = {
            "source": str(Path(midi_dir).resolve()),
            "terms": "user-supplied MIDI files; the user answers for their terms",
            "kind": "midi",
        }

    old = _load_manifest(out_dir)
    cached = {}
    if old and old.get("version") == MANIFEST_VERSION:
        for r in old.get("pieces", []):
            if r.get("ok") and (out_dir / r["midi"]).exists():
                cached[(r["id"], r["source"])] = r
    todo = [p for p in pieces if (p.id, p.source) not in cached]
    records = [cached[(p.id, p.source)] for p in pieces if (p.id, p.source) in cached]

    jobs = [(p, str(out_dir)) for p in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), file=sys.stderr, unit="piece", desc="prepare")
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, maxtasksperchild=50) as pool:
            for rec in pool.imap_unordered(_convert_star, jobs, chunksize=1):
                records.append(rec)
                if bar:
                    bar.update()
    else:
        for job in jobs:
            records.append(_convert_star(job))
            if bar:
                bar.update()
    if bar:
        bar.close()

    records.sort(key=lambda r: r["id"])
    assign_splits(records, out_dir)
    ok = [r for r in records if r.get("ok")]
    failures = [
        {"id": r["id"], "source": r["source"], "error": r["error"]}
        for r in records
        if not r.get("ok")
    ]
    tok = _tokenizer()
    manifest = {
        "version": MANIFEST_VERSION,
        "tokenizer_sha1": hashlib.sha1(tok.to_json().encode()).hexdigest(),
        "collections": sources,
        "excluded_collections": EXCLUDED_COLLECTIONS,
        "skipped": skipped,
        "n_pieces": len(ok),
        "n_failures": len(failures),
        "n_cached": len(cached.keys() & {(p.id, p.source) for p in pieces}),
        "n_converted": len(todo),
        "failures": failures,
        "splits": {s: sorted(r["id"] for r in ok if r["split"] == s) for s in SPLITS},
        "pieces": ok + [r for r in records if not r.get("ok")],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


# ---------------------------------------------------------------------------------------------
# Loading for training (numpy only)


def load_manifest(data_dir: str | os.PathLike) -> dict:
    m = _load_manifest(Path(data_dir))
    if m is None:
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; run `python -m training.data prepare`")
    return m


def split_collections(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The collection of every piece of a split, in the order of :func:`load_split`."""
    manifest = load_manifest(data_dir)
    collection = {r["id"]: r["collection"] for r in manifest["pieces"] if r.get("ok")}
    return [collection[i] for i in manifest["splits"][split]]


def load_split(
    data_dir: str | os.PathLike, split: str, tokenizer: Tokenizer | None = None
) -> list[np.ndarray]:
    """Token ids (int32, no BOS/EOS) of every piece of a split, in manifest order.

    Tokenized once into ``DIR/tokens/{split}.npz``; rebuilt when the tokenizer configuration or
    the split's pieces change.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    data_dir = Path(data_dir)
    tokenizer = tokenizer or _tokenizer()
    manifest = load_manifest(data_dir)
    ids = manifest["splits"][split]
    recs = {r["id"]: r for r in manifest["pieces"] if r.get("ok")}
    key = hashlib.sha1((tokenizer.to_json() + "\n" + "\n".join(ids)).encode("utf-8")).hexdigest()
    cache = data_dir / "tokens" / f"{split}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    flat, offsets = z["tokens"], z["offsets"]
                    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        except (OSError, KeyError, ValueError):
            pass
    seqs = [np.asarray(tokenizer.encode(data_dir / recs[i]["midi"]), np.int32) for i in ids]
    offsets = np.zeros(len(seqs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{split}.tmp{os.getpid()}.npz")
    np.savez(tmp, tokens=flat, offsets=offsets, key=np.array(key))
    os.replace(tmp, cache)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(seqs))]


def transpose(ids: np.ndarray, semitones: int, tokenizer: Tokenizer) -> np.ndarray | None:
    """Shift every melodic pitch by ``semitones`` (drums stay); ``None`` if a note would leave
    the tokenizer's pitch range. A precomputed id → id table, so it is one gather."""
    if semitones == 0:
        return np.asarray(ids)
    out = tokenizer.pitch_shift_table(semitones)[np.asarray(ids)]
    if (out < 0).any():
        return None
    return out.astype(np.asarray(ids).dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Program augmentation (batch time, after transposition; docs/data.md, "Program augmentation")

# What each General MIDI program can play: its sounding range (MIDI pitches, inclusive), from
# orchestration tables. Programs absent here (timpani, orchestra hit, sound effects, percussive
# and ethnic instruments without a settled range) are never drawn.
INSTRUMENT_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys(range(0, 8), (21, 108)),  # pianos, electric pianos, harpsichord, clavinet
    8: (60, 108), 9: (79, 108), 10: (60, 96), 11: (53, 89),  # celesta, glockenspiel, box, vibes
    12: (45, 96), 13: (65, 108), 14: (60, 77), 15: (48, 84),  # marimba, xylophone, bells, dulcimer
    **dict.fromkeys(range(16, 21), (36, 96)),  # organs
    21: (53, 89), 22: (60, 84), 23: (53, 89),  # accordion, harmonica, tango accordion
    **dict.fromkeys(range(24, 32), (40, 88)),  # guitars
    **dict.fromkeys(range(32, 40), (28, 67)),  # basses (acoustic, electric, fretless, slap, synth)
    40: (55, 103), 41: (48, 88), 42: (36, 76), 43: (28, 67),  # violin, viola, cello, contrabass
    44: (28, 103), 45: (28, 96), 46: (23, 103),  # tremolo strings, pizzicato strings, harp
    **dict.fromkeys(range(48, 52), (28, 96)),  # string ensembles, synth strings
    52: (40, 84), 53: (40, 84), 54: (40, 84),  # choir aahs, voice oohs, synth voice
    56: (54, 82), 57: (40, 72), 58: (28, 58), 59: (54, 82),  # trumpet, trombone, tuba, muted tpt
    60: (34, 77), 61: (36, 84), 62: (36, 84), 63: (36, 84),  # french horn, brass sections
    64: (56, 88), 65: (49, 81), 66: (44, 76), 67: (36, 69),  # soprano, alto, tenor, baritone sax
    68: (58, 91), 69: (52, 81), 70: (34, 75), 71: (50, 94),  # oboe, english horn, bassoon, clarinet
    72: (74, 108), 73: (60, 96), 74: (60, 86), 75: (60, 96),  # piccolo, flute, recorder, pan flute
    76: (60, 96), 77: (60, 96), 78: (60, 96), 79: (60, 84),  # blown bottle, shakuhachi, whistle
    **dict.fromkeys(range(80, 96), (36, 96)),  # synth leads and pads
    104: (48, 77), 105: (48, 84), 107: (55, 91), 110: (55, 103),  # sitar, banjo, koto, fiddle
}  # fmt: skip
# Ensembles a piece's voices are redrawn into, one drawn per piece. A voice takes an instrument
# of the ensemble whose range holds it, not yet taken by another voice; keyboards play every
# voice on one instrument (one track, as a pianist would).
ENSEMBLES: dict[str, tuple[int, ...]] = {
    "strings": (40, 110, 41, 42, 43, 44, 45, 46),
    "string ensemble and choir": (48, 49, 50, 51, 52, 53, 54),
    "brass": (56, 59, 60, 57, 58, 61, 62, 63),
    "reeds": (64, 65, 66, 67, 68, 69, 71, 70),
    "pipes": (72, 73, 74, 75, 76, 77, 78, 79, 70),
    "guitars and bass": (24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37),
    "synths": (*range(80, 96), 38, 39),
    "chromatic percussion": (8, 9, 10, 11, 12, 13, 14, 15, 32),
    "mixed": tuple(INSTRUMENT_RANGES),
}
KEYBOARDS = (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21)  # pianos, organs, accordion


def voice_ranges(ids: np.ndarray, tokenizer: Tokenizer) -> dict[int, tuple[int, int, float]]:
    """``program → (lowest, highest, mean pitch)`` of every melodic voice of a token stream."""
    table = tokenizer.token_table()
    ids = np.asarray(ids)
    at = np.flatnonzero(table["kind"][ids[:-1]] == Kind.PROGRAM)
    at = at[table["kind"][ids[at + 1]] == Kind.PITCH]  # Program_-1 is followed by PitchDrum
    programs, pitches = table["a"][ids[at]], table["a"][ids[at + 1]]
    return {
        int(p): (int(v.min()), int(v.max()), float(v.mean()))
        for p in np.unique(programs)
        for v in [pitches[programs == p]]
    }


def draw_programs(
    voices: dict[int, tuple[int, int, float]], rng: np.random.Generator
) -> dict[int, int]:
    """New program for each voice (``old → new``): an ensemble drawn uniformly among
    ``ENSEMBLES`` and the keyboards. Voices take instruments top voice first, each among the two
    free instruments of the ensemble whose range centre is nearest the voice's mean pitch; a
    voice no ensemble instrument can play falls back to any instrument that can, or keeps its
    own program."""
    names = [*ENSEMBLES, "keyboard"]
    name = names[int(rng.integers(len(names)))]
    lowest = min((low for low, _, _ in voices.values()), default=0)
    highest = max((high for _, high, _ in voices.values()), default=127)
    if name == "keyboard":
        fits = [p for p in KEYBOARDS if _plays(p, lowest, highest)]
        program = int(rng.choice(fits)) if fits else 0
        return dict.fromkeys(voices, program)
    taken: set[int] = set()
    mapping = {}
    for old, (low, high, mean) in sorted(voices.items(), key=lambda v: -v[1][2]):
        for pool in (ENSEMBLES[name], ENSEMBLES["mixed"]):
            shuffled = (int(p) for p in rng.permutation(pool))
            free = [p for p in shuffled if p not in taken and _plays(p, low, high)]
            if free:  # shuffled first, so instruments of one range take turns
                free.sort(key=lambda p: abs(sum(INSTRUMENT_RANGES[p]) / 2 - mean))
                new = int(free[int(rng.integers(min(2, len(free))))])
                break
        else:
            new = old if old not in taken else next(p for p in range(128) if p not in taken)
        taken.add(new)
        mapping[old] = new
    return mapping


def _plays(program: int, low: int, high: int) -> bool:
    bottom, top = INSTRUMENT_RANGES[program]
    return bottom <= low and high <= top


def redraw_programs(ids: np.ndarray, rng: np.random.Generator, tokenizer: Tokenizer) -> np.ndarray:
    """The same notes with each melodic voice's Program token redrawn (:func:`draw_programs`);
    drums and every other token stay. One gather through a Program id → id table."""
    ids = np.asarray(ids)
    mapping = draw_programs(voice_ranges(ids, tokenizer), rng)
    table = np.arange(tokenizer.vocab_size, dtype=ids.dtype)
    for old, new in mapping.items():
        table[tokenizer.id_of(f"Program_{old}")] = tokenizer.id_of(f"Program_{new}")
    return table[ids]


# ---------------------------------------------------------------------------------------------
# stats and command line


def stats(data_dir: str | os.PathLike) -> dict:
    """Pieces, tokens, notes and seconds of music per split (from the manifest)."""
    manifest = load_manifest(data_dir)
    recs = {r["id"]: r for r in manifest["pieces"] if r.get("ok")}
    out = {}
    for split in SPLITS:
        rs = [recs[i] for i in manifest["splits"][split]]
        tokens = sum(r["n_tokens"] for r in rs)
        notes = sum(r["n_notes"] for r in rs)
        seconds = sum(r["seconds"] for r in rs)
        out[split] = {
            "pieces": len(rs),
            "tokens": tokens,
            "notes": notes,
            "hours": round(seconds / 3600, 2),
            "tokens_per_note": round(tokens / notes, 3) if notes else 0.0,
            "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
        }
    out["failures"] = manifest["n_failures"]
    return out


def _print_stats(s: dict) -> None:
    print(
        f"{'split':6} {'pieces':>7} {'tokens':>10} {'notes':>9} {'hours':>6} {'tok/note':>8} "
        f"{'tok/s':>6}"
    )
    for split in SPLITS:
        r = s[split]
        print(
            f"{split:6} {r['pieces']:7d} {r['tokens']:10d} {r['notes']:9d} {r['hours']:6.2f} "
            f"{r['tokens_per_note']:8.3f} {r['tokens_per_second']:6.2f}"
        )
    print(f"failures: {s['failures']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="convert collections / a MIDI folder to multi-track MIDI")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--collections",
        default=",".join(DEFAULT_COLLECTIONS),
        help=f"comma-separated, of {','.join(COLLECTIONS)}; empty for none",
    )
    p.add_argument("--midi-dir", default=None, help="also take every MIDI file under this folder")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="at most N pieces per collection")
    p.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("stats", help="pieces and tokens per split")
    s.add_argument("--data", required=True)
    args = ap.parse_args(argv)
    if args.command == "prepare":
        names = [c for c in args.collections.split(",") if c.strip()]
        m = prepare(
            args.out,
            names,
            midi_dir=args.midi_dir,
            workers=args.workers,
            limit=args.limit,
            progress=not args.no_progress,
        )
        print(
            f"{m['n_pieces']} pieces ({m['n_converted']} converted, {m['n_cached']} cached), "
            f"{m['n_failures']} failures, {m['seconds']} s → {args.out}/{MANIFEST}"
        )
        print("pieces per split: " + ", ".join(f"{len(m['splits'][s])} {s}" for s in SPLITS))
        return 0
    _print_stats(stats(args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
