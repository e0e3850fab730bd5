"""Musical quality of the ablations, trained on the same data and token budget.

    python benchmarks/ablation_quality.py --data data/corpus --out runs/ablations [--steps 200]

Trains each configuration of training/configs (default, gqa_two_scale, mha_two_scale, askv_full,
mha_full: equal width, depth and data) for the same number of steps with the same seed, so each
sees the same training tokens; exports it as q8_0; and evaluates it with training.evaluate (test
perplexity through the engine, bits per note, NMSI of 4-bar-prompt continuations). Prints one
table; asserts nothing. A configuration already trained in --out is not trained again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = ("default", "gqa_two_scale", "mha_two_scale", "askv_full", "mha_full")
ROOT = Path(__file__).resolve().parents[1]


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
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
