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

from sage_edge.errors import MidiInputError
from sage_edge.tokenizer import KIND_PITCH, KIND_PITCH_DRUM, Tokenizer, load_score

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
TRANSPOSE_RANGE = (-5, 6)  # semitones, inclusive, for augmentation

# General MIDI programs per voice, top part first. miditok merges tracks that share a program, so
# every voice of a piece needs its own. The lowest part always gets the bass program.
VOCAL_PROGRAMS = (52, 53, 54, 48, 49, 50, 51)  # Choir Aahs, Voice Oohs, Synth Voice, ensembles
VOCAL_BASS = 42  # Cello carries the bass line
QUARTET_PROGRAMS = (40, 110, 41)  # Violin I = Violin, Violin II = Fiddle, Viola
QUARTET_BASS = 42  # Cello

_TERMS_MUSIC21 = (
    "music21 corpus (BSD-licensed software); the encodings are distributed with the encoders' "
    "permission (music21/corpus/license.txt); no collection-specific restriction file or embedded "
    "rights statement; compositions in the public domain"
)


@dataclass(frozen=True)
class Collection:
    name: str
    folder: str  # under music21/corpus
    kind: str  # "vocal" or "quartet"
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
    )
}
DEFAULT_COLLECTIONS = tuple(COLLECTIONS)

# Collections music21 ships that we leave out, and why (also written to the manifest).
EXCLUDED_COLLECTIONS = {
    "palestrina": "Humdrum encodings (c) 2000 John Miller: 'Rights to all derivative electronic "
    "formats reserved' (embedded !!!YEM line)",
    "essenFolksong": "Essen folk songs: permission for non-commercial distribution and use only "
    "(essenFolksong/license.txt); also monophonic",
}

_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")
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
    kind: str  # "vocal", "quartet" or "midi"


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


def split_of(identity: str) -> str:
    """train/valid/test ≈ 90/5/5 from the sha1 of the identity (never random state)."""
    bucket = int(hashlib.sha1(identity.encode("utf-8")).hexdigest()[:8], 16) % 100
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
        if bare:
            rest.append(r.strip())
    return "; ".join(rest)


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


def score_to_midi(source: str, kind: str, out_path: Path, tpq: int = 480) -> None:
    """Convert one notated score to a multi-track MIDI file, one track and program per part.

    Built from music21's notes directly (not music21's MIDI writer, which can add empty tracks
    and channel games): ties merged, an anacrusis padded so bars line up with the notation,
    time signatures and metronome marks of the score kept.
    """
    import music21
    import symusic

    score = music21.converter.parse(source)
    parts = list(score.parts)
    if kind == "quartet" and len(parts) != 4:
        raise ValueError(f"{len(parts)} parts, not a string quartet")
    programs = programs_for(kind, len(parts))
    first_measure = parts[0].getElementsByClass("Measure").first() if parts else None
    pad = float(first_measure.paddingLeft) if first_measure is not None else 0.0

    def tick(q) -> int:
        return round((float(q) + pad) * tpq)

    out = symusic.Score(tpq)
    for part, program in zip(parts, programs, strict=True):
        track = symusic.Track(part.partName or f"part{program}", program, False)
        for n in part.stripTies().flatten().notes:
            dur = tick(n.offset + n.quarterLength) - tick(n.offset)
            if dur <= 0:  # grace notes
                continue
            velocity = n.volume.velocity if n.volume.velocity else 80
            for p in n.pitches:
                track.notes.append(symusic.Note(tick(n.offset), dur, int(p.midi), int(velocity)))
        if len(track.notes):
            out.tracks.append(track)
    if not parts:
        raise ValueError("no parts")
    flat0 = parts[0].flatten()
    for ts in flat0.getElementsByClass("TimeSignature"):
        out.time_signatures.append(
            symusic.TimeSignature(tick(ts.offset), ts.numerator, ts.denominator)
        )
    seen_tempo = False
    for start, _end, mm in score.metronomeMarkBoundaries():
        bpm = mm.getQuarterBPM()
        if bpm and bpm > 0:
            t = 0 if not seen_tempo else tick(start)
            out.tempos.append(symusic.Tempo(t, float(bpm)))
            seen_tempo = True
    if not seen_tempo:
        out.tempos.append(symusic.Tempo(0, 120.0))
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
        "n_notes": int(np.count_nonzero((kinds == KIND_PITCH) | (kinds == KIND_PITCH_DRUM))),
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
        else:
            score_to_midi(piece.source, piece.kind, tmp)
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
        return 0
    _print_stats(stats(args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
