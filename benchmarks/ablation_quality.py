"""Musical quality of the ablations, trained on the same data and token budget.

    python benchmarks/ablation_quality.py --data data/corpus --out runs/ablations [--steps 200]

Trains each configuration of training/configs (default, gqa_two_scale, mha_two_scale, askv_full,
mha_full: equal width, depth and data) for the same number of steps with the same seed, so each
sees the same training tokens; exports it as q8_0; and evaluates it with training.evaluate (test
perplexity through the engine, bits per note, NMSI of 4-bar-prompt continuations, and the
music-theory measures of docs/evaluation.md on seeded 16-bar generations). Prints one table, or
every report as JSON with --json; asserts nothing. A configuration already trained in --out is not
trained again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = ("default", "gqa_two_scale", "mha_two_scale", "askv_full", "mha_full")
ROOT = Path(__file__).resolve().parents[1]
# Music-theory rows of the table: (key in the report's music section, column header, scale).
MUSIC_COLUMNS = (
    ("parallel_fifths_per_100_beats", "5ths/100b", 1.0),
    ("parallel_octaves_per_100_beats", "8ves/100b", 1.0),
    ("semitone_clash_share", "clash %", 100.0),
    ("tertian_share", "triads %", 100.0),
    ("out_of_key_share", "off-key %", 100.0),
    ("local_key_agreement", "bar key %", 100.0),
    ("final_on_tonic_rate", "tonic end %", 100.0),
)


def run(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", action="store_true", help="print every report as JSON")
    args = parser.parse_args()

    results = {}
    for name in args.configs.split(","):
        run_dir = Path(args.out) / name
        checkpoint = run_dir / "best.pt"
        if not checkpoint.exists():
            config = ROOT / "training" / "configs" / f"{name}.toml"
            run("training.train", "--config", str(config), "--data", args.data, "--out",
                str(run_dir), "--max-steps", str(args.steps))  # fmt: skip
        model = run_dir / f"{name}.sage"
        run("training.export", str(checkpoint), "--quant", "q8_0", "--out", str(model))
        report = json.loads(run("training.evaluate", "--model", str(model), "--data", args.data,
                                "--json", "--seed", "0"))  # fmt: skip
        results[name] = report
        print(f"{name}: {json.dumps(report['perplexity'])}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


def print_table(results: dict[str, dict]) -> None:
    """One row per configuration: test perplexity, NMSI, the generated music's measures and how
    many General MIDI families it plays when asked (the real music's row last, for reference)."""
    header = f"{'config':16} {'test ppl':>8} {'NMSI':>6}"
    header += "".join(f" {name:>11}" for _, name, _ in MUSIC_COLUMNS) + f" {'families':>8}"
    print(header)

    def music_cells(side: dict) -> str:
        cells = ""
        for key, _, scale in MUSIC_COLUMNS:
            value = side[key]
            cells += f" {'-' if value is None else f'{value * scale:.1f}':>11}"
        return cells

    for name, report in results.items():
        music = report["music"]
        families = music["program_adherence"]["families"].values()
        playing = sum(row["share"] > 0 for row in families)
        print(
            f"{name:16} {report['perplexity']['perplexity']:8.3f} "
            f"{report['continuation']['nmsi']['generated']['nmsi']:6.1f}"
            f"{music_cells(music['generated'])} {playing:>5}/{len(families)}"
        )
    if results:
        real = next(iter(results.values()))["music"]["real"]
        print(f"{'real test music':16} {'':>8} {'':>6}{music_cells(real)}")


if __name__ == "__main__":
    main()
