"""Quality gate for the int8 key/value memory: the engine with ``kv_memory="int8"`` against the
same engine with the f32 memory, on the test split.

    python benchmarks/kv_quality.py [--model FILE] [--data tests/data/corpus_test_split.npz]

Every test piece is fed as BOS + piece + EOS to two sessions of one model, one per memory, and
each predicted token's distribution is compared: the mean KL divergence KL(f32 || int8) in nats
per predicted token, and the test perplexity of each. ``--data`` takes what
``training.evaluate.load_pieces`` takes (the committed ``.npz`` of the shipped model's test split
by default, or a prepared corpus such as ``data/corpus``). Targets, like the weights' gate: mean
KL at most 0.01 nats and perplexity within 0.5 % of the f32 memory's; the exit status is 1 when
either is missed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from sage_edge.engine import DEFAULT_MODEL, Engine  # noqa: E402
from training.evaluate import FEED_CHUNK, load_pieces, log_softmax  # noqa: E402

TEST_SPLIT = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus_test_split.npz"
KL_TARGET = 0.01  # nats per predicted token
PERPLEXITY_TARGET = 0.005  # relative change


def compare(model: Path, data: Path) -> dict:
    """Mean KL(f32 || int8), the largest single-token KL, and both perplexities over the pieces."""
    engines = {kv: Engine(model, kv_memory=kv) for kv in ("f32", "int8")}
    tokenizer = engines["f32"].tokenizer
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    sessions = {kv: engine.session(seed=0) for kv, engine in engines.items()}
    nll = {kv: 0.0 for kv in sessions}
    kl_total, kl_max, count = 0.0, 0.0, 0
    pieces = load_pieces(data, tokenizer, None)
    for piece in pieces:
        sequence = np.concatenate([[bos], piece.ids, [eos]]).astype(np.int64)
        inputs, targets = sequence[:-1], sequence[1:]
        for session in sessions.values():
            session.reset()
        for start in range(0, len(inputs), FEED_CHUNK):
            chunk = inputs[start : start + FEED_CHUNK].tolist()
            wanted = targets[start : start + len(chunk)]
            logp = {}
            for kv, session in sessions.items():
                logits = np.asarray(session.feed(chunk, all_logits=True)).reshape(len(chunk), -1)
                logp[kv] = log_softmax(logits)
                nll[kv] -= float(logp[kv][np.arange(len(chunk)), wanted].sum())
            kl = (np.exp(logp["f32"]) * (logp["f32"] - logp["int8"])).sum(axis=-1)
            kl_total += float(kl.sum())
            kl_max = max(kl_max, float(kl.max()))
            count += len(chunk)
    memory = {kv: engine.info for kv, engine in engines.items()}
    return {
        "pieces": len(pieces),
        "tokens": count,
        "mean_kl": kl_total / count,
        "max_kl": kl_max,
        "perplexity": {kv: math.exp(total / count) for kv, total in nll.items()},
        "kv_bytes": {kv: info["kv_bytes"] for kv, info in memory.items()},
        "session_bytes": {kv: info["session_bytes"] for kv, info in memory.items()},
        "kernel": memory["f32"]["kernel"],
    }


def report(model: Path, data: Path, r: dict) -> tuple[str, bool]:
    change = r["perplexity"]["int8"] / r["perplexity"]["f32"] - 1
    passed = r["mean_kl"] <= KL_TARGET and abs(change) <= PERPLEXITY_TARGET
    lines = [
        f"{model} on {data}: {r['pieces']} pieces, {r['tokens']} predicted tokens, "
        f"kernel {r['kernel']}",
        f"{'memory':<6} {'kv bytes':>10} {'session bytes':>14} {'perplexity':>11}",
    ]
    for kv in ("f32", "int8"):
        lines.append(
            f"{kv:<6} {r['kv_bytes'][kv]:>10,} {r['session_bytes'][kv]:>14,} "
            f"{r['perplexity'][kv]:>11.5f}"
        )
    lines.append(
        f"int8 vs f32: mean KL {r['mean_kl']:.6f} nats/token (max {r['max_kl']:.4f}), "
        f"perplexity {change:+.4%}"
    )
    lines.append(
        f"targets: mean KL <= {KL_TARGET}, perplexity within {PERPLEXITY_TARGET:.1%} → "
        + ("PASS" if passed else "FAIL")
    )
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a .sage model file")
    parser.add_argument(
        "--data", type=Path, default=TEST_SPLIT, help="test pieces (an .npz or a prepared corpus)"
    )
    args = parser.parse_args(argv)
    text, passed = report(args.model, args.data, compare(args.model, args.data))
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
