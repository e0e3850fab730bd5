"""Live encoder vs Tokenizer.encode over a folder of MIDI files: how many give identical tokens.

Each score is played as timed note events (track i on channel i, at a tempo whose microsecond
grid is exact) through the engine's live encoder, as note calls, as raw running-status bytes and
as raw bytes with each bar taken in final parts ahead, and the tokens compared with
``Tokenizer.encode`` of the same score; the score's time signatures go to the encoder as meter
changes (``LiveEncoder.meter``). Identical pieces whose meter changes are counted too. Pieces the
live encoder cannot take by design are counted apart: more than 16 parts, two notes of one track
and pitch overlapping (a MIDI key struck again ends its note).

    python benchmarks/live_parity.py DIR [--limit N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

import sage_edge
from sage_edge.live import played_and_encoded
from sage_edge.tokenizer import Tokenizer, load_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(args.folder.rglob("*.mid"))
    random.Random(args.seed).shuffle(paths)
    if args.limit:
        paths = paths[: args.limit]
    engine, tokenizer = sage_edge.Engine(), Tokenizer.default()
    timesigs = {i for i, s in enumerate(tokenizer.token_strings()) if s.startswith("TimeSig")}
    tally, differ = Counter(), []
    for path in paths:
        result = played_and_encoded(engine, tokenizer, load_score(path))
        if isinstance(result, str):
            tally["skipped: " + result] += 1
            continue
        played, want = result
        same = all(tokens == want for tokens in played.values())
        tally["identical" if same else "different"] += 1
        if same and len(timesigs.intersection(want)) > 1:
            tally["identical, with a meter change"] += 1
        if not same:
            differ.append(path)
    for key, n in sorted(tally.items()):
        print(f"{key}: {n}")
    for path in differ[:20]:
        print("different:", path)


if __name__ == "__main__":
    main()
