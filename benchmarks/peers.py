"""The engine against its peers on the same weights: milliseconds per decoded token, one thread.

    python benchmarks/peers.py --model runs/default/model_q8_0.sage [--positions 128,1024]
    python benchmarks/peers.py --checkpoint runs/default/best.pt
    python benchmarks/peers.py --random training/configs/default.toml   # untrained weights
    SAGE_EDGE_KERNEL=avx2 python benchmarks/peers.py --model ...   # the engine's avx2 path here

Rows, each a decode step (one token in, logits out) after ``P`` tokens of context:

- ``engine f32`` / ``engine q8_0``: ``sage_edge.Engine`` sessions (one thread) fed one token;
- ``pytorch eager``: ``SageModel.forward_segment`` on one token with its key/value memory,
  ``torch.set_num_threads(1)``;
- ``onnxruntime f32``: the decode step exported with ``torch.onnx.export`` (per-layer key/value
  windows of ``h_l`` entries as inputs and outputs), ``intra_op_num_threads = 1``;
- ``onnxruntime int8``: the same graph after ``onnxruntime.quantization.quantize_dynamic``;
- ``llama.cpp Q8_0`` / ``llama.cpp Q4_0``: ``llama-cpp-python`` (``n_threads=1``) running a
  Llama of the same shape with the same weights (``benchmarks/llama_gguf.py``: one key/value
  family instead of AS-KVHS, full attention instead of DSMR's horizons, RoPE instead of ALiBi),
  quantized by llama.cpp's own ``llama_model_quantize``; ``Llama.eval`` of one token after the
  past tokens were evaluated in batches of 512.

The ONNX step's logits are checked against PyTorch (≤ 1e-4) before timing; the Llama's cannot be
(it is not the same model). Reports the median ms/token at each past length and the engine's speed
as a ratio to each peer (peer ms / engine ms: above 1 means the engine is faster), the engine's
kernel path and the load average before and after. If the engine is not built, or llama.cpp
(the ``bench`` extra) is not installed, the others are measured and a line says what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import onnx_decode  # noqa: E402
from training.model import SageModel  # noqa: E402

ONNX_TOLERANCE = 1e-4
PREFILL_CHUNK = 256
LLAMA_CPP_BATCH = 512
LLAMA_CPP_QUANTS = ("Q8_0", "Q4_0")


def load_reference(args) -> tuple[SageModel, str]:
    """The reference model and its tokenizer JSON, from a .sage file, a checkpoint or a config."""
    if args.model:
        from training.model import load_model_file

        model = load_model_file(args.model)
        return model, model.tokenizer_json
    if args.checkpoint:
        from training.model import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        return model, model.tokenizer_json
    return random_model(args.random, args.seed)


def random_model(config_path: str, seed: int) -> tuple[SageModel, str]:
    """A model of a training config's architecture with its initial (random) weights: a decode
    step costs the same whatever the weights are."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from sage_edge.tokenizer import Tokenizer
    from training.model import ModelConfig, schedule_from_dict

    spec = dict(tomllib.loads(Path(config_path).read_text())["model"])
    schedule = schedule_from_dict(spec["n_layers"], spec.pop("schedule"))
    tokenizer = Tokenizer.default()
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        families=tokenizer.families.tolist(),
        horizons=list(schedule.horizons),
        **spec,
    )
    return SageModel(config).eval(), tokenizer.to_json()


def engine_files(args, model: SageModel, tokenizer_json: str, tmp: Path) -> dict[str, Path]:
    """The .sage files the engine runs: the given file, plus an f32 export of the same weights
    (so f32 meets f32); a checkpoint or config is exported as f32 and q8_0."""
    from training.export import export

    files = {}
    given_quant = None
    if args.model:
        from sage_edge import format as sage_format

        given_quant = sage_format.read(args.model).matrix_dtype
        files[given_quant] = Path(args.model)
    for quant in ("f32", "q8_0"):
        if quant not in files:
            path = tmp / f"model_{quant}.sage"
            export(model, tokenizer_json, quant, path)
            files[quant] = path
    return dict(sorted(files.items(), key=lambda kv: kv[0] != "f32"))


def timed_ms(step, tokens: np.ndarray, warmup: int) -> list[float]:
    """Wall time (ms) of each ``step(token)`` over ``tokens`` after ``warmup`` untimed calls."""
    for token in tokens[:warmup].tolist():
        step(token)
    times = []
    for token in tokens[warmup:].tolist():
        t0 = time.perf_counter()
        step(token)
        times.append(1000.0 * (time.perf_counter() - t0))
    return times


def prefill_memory(model: SageModel, prefix: np.ndarray):
    memory = model.init_memory(1)
    with torch.no_grad():
        for start in range(0, len(prefix), PREFILL_CHUNK):
            chunk = torch.as_tensor(prefix[start : start + PREFILL_CHUNK]).view(1, -1)
            _, memory = model.forward_segment(chunk, memory)
    return memory


class TorchRunner:
    """PyTorch eager: ``forward_segment`` on one token, carrying the model's memory."""

    def __init__(self, model: SageModel, prefilled):
        self.model, self.prefilled = model, prefilled

    def restart(self) -> None:
        self.memory = self.prefilled  # never modified in place: forward_segment returns a new one

    def step(self, token: int) -> None:
        with torch.no_grad():
            _, self.memory = self.model.forward_segment(torch.tensor([[token]]), self.memory)


class OrtRunner:
    def __init__(self, decoder: onnx_decode.OrtDecoder, prefilled):
        self.decoder, self.prefilled = decoder, prefilled
        self.step = decoder.step

    def restart(self) -> None:
        self.decoder.set_memory(self.prefilled)


class EngineRunner:
    """An engine session fed one token per step (no sampling: the peers only compute logits)."""

    def __init__(self, engine, prefix: np.ndarray):
        self.engine, self.prefix = engine, prefix

    def restart(self) -> None:
        self.session = self.engine.session(seed=0)
        for start in range(0, len(self.prefix), PREFILL_CHUNK):
            self.session.feed(self.prefix[start : start + PREFILL_CHUNK].tolist())

    def step(self, token: int) -> None:
        self.session.feed([token])


class LlamaCppRunner:
    """llama.cpp: ``Llama.eval`` of one token, then its logits (``llama_get_logits`` waits for the
    step to finish); a restart clears the context (``reset``: the next ``eval`` drops the cached
    keys/values past it) and evaluates the past tokens again."""

    def __init__(self, llm, prefix: np.ndarray):
        import llama_cpp

        self.llm, self.prefix = llm, prefix.tolist()
        self.logits = llama_cpp.llama_get_logits

    def restart(self) -> None:
        self.llm.reset()
        self.llm.eval(self.prefix)

    def step(self, token: int) -> None:
        self.llm.eval([token])
        self.logits(self.llm.ctx)


def llama_cpp_models(sage_file: Path, n_ctx: int, tmp: Path, notes: list[str]) -> dict:
    """``llama.cpp Q8_0`` / ``Q4_0`` → a ``llama_cpp.Llama`` (one thread) of the same-shape Llama;
    none, with a note printed at once, when llama-cpp-python or gguf is not installed."""
    try:
        import llama_cpp

        from benchmarks import llama_gguf
    except ImportError as exc:
        note = f"llama.cpp not measured ({exc}): pip install '.[bench]' builds llama-cpp-python"
        print(note, file=sys.stderr)
        notes.append(note)
        return {}
    from sage_edge import format as sage_format

    f32 = llama_gguf.write_gguf(sage_format.read(sage_file), tmp / "llama_f32.gguf", n_ctx)
    models = {}
    for quant in LLAMA_CPP_QUANTS:
        path = llama_gguf.quantize(f32, tmp / f"llama_{quant}.gguf", quant)
        models[f"llama.cpp {quant}"] = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=LLAMA_CPP_BATCH,
            n_threads=1,
            n_threads_batch=1,
            # llama-cpp-python's default; on this 2-core AVX-512 host flash attention made the
            # Q8_0 step 1.2x / 2.1x / 2.0x slower at 128 / 1 024 / 4 096 past tokens
            flash_attn=False,
            verbose=False,
        )
    notes.append(
        f"llama.cpp: llama-cpp-python {llama_cpp.__version__}, a same-shape Llama (the pitch "
        "family's key/value projection, full attention, RoPE), every matrix quantized by "
        "llama_model_quantize"
    )
    return models


def measure(runners: dict, tokens: np.ndarray, rounds: int, warmup: int) -> dict[str, float]:
    """Median ms/token of each runner. The runners take turns, ``rounds`` times, each turn
    starting again from the prefilled state, so every row sees the same machine load and the
    same past length (P … P + warmup + steps/rounds)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for chunk in np.array_split(tokens, rounds):
        for name, runner in runners.items():
            runner.restart()
            times[name] += timed_ms(runner.step, np.concatenate([tokens[:warmup], chunk]), warmup)
    return {name: float(np.median(t)) for name, t in times.items()}


def engine_class():
    try:
        from sage_edge import Engine
    except ImportError:
        from sage_edge.engine import Engine
    return Engine


def run(args) -> dict:
    torch.set_num_threads(1)
    positions = [int(p) for p in args.positions.split(",") if p.strip()]
    if not positions or min(positions) < 0:
        raise ValueError("--positions needs past lengths ≥ 0, e.g. 128,1024")
    if args.steps < args.rounds or args.rounds < 1:
        raise ValueError("--steps must be at least --rounds, which must be positive")
    model, tokenizer_json = load_reference(args)
    c = model.config
    rng = np.random.default_rng(args.seed)
    # Any ids: the cost of a step does not depend on which token it is (only its family's
    # projection is chosen), and random ids cover every family.
    stream = rng.integers(0, c.vocab_size, max(positions) + args.steps)

    report = {
        "load_average_before": os.getloadavg(),
        "model": args.model or args.checkpoint or f"random weights of {args.random}",
        "config": {k: v for k, v in c.to_dict().items() if k != "families"},
        "parameters": model.n_parameters(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": 1,
        "steps": args.steps,
        "rounds": args.rounds,
        "positions": positions,
        "rows": {},
        "notes": [],
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        f32_onnx = onnx_decode.export_onnx(model, tmp / "decode_f32.onnx")
        int8_onnx = onnx_decode.quantize_int8(f32_onnx, tmp / "decode_int8.onnx")
        ort_f32 = onnx_decode.OrtDecoder(f32_onnx, model)
        ort_int8 = onnx_decode.OrtDecoder(int8_onnx, model)
        check_prefix, check_steps = stream[: min(positions[-1], 64)], stream[-8:]
        error = onnx_decode.check_against_reference(model, ort_f32, check_prefix, check_steps)
        error_int8 = onnx_decode.check_against_reference(model, ort_int8, check_prefix, check_steps)
        report["onnx_max_abs_logit_error"] = {"f32": error, "int8": error_int8}
        if error > ONNX_TOLERANCE:
            raise RuntimeError(
                f"the ONNX decode step differs from PyTorch by {error:.2e} > {ONNX_TOLERANCE}"
            )

        files = engine_files(args, model, tokenizer_json, tmp)
        engines = {}
        try:
            Engine = engine_class()
            for quant, path in files.items():
                engines[f"engine {quant}"] = Engine(str(path))
            report["kernel"] = next(iter(engines.values())).info["kernel"]
        except ImportError as exc:
            report["notes"].append(f"engine unavailable: {exc}")
        # the longest context a turn reaches: the past, the warm-up and its share of the steps
        # (a multiple of 256, as llama.cpp pads it, so that it does not warn past the GGUF's length)
        n_ctx = -(-(max(positions) + args.warmup + args.steps) // 256) * 256
        llamas = llama_cpp_models(files["f32"], n_ctx, tmp, report["notes"])

        peers = ("pytorch eager", "onnxruntime f32", "onnxruntime int8", *llamas)
        rows = report["rows"]
        for name in (*engines, *peers):
            rows[name] = {}
        if not engines:
            rows["engine"] = dict.fromkeys(map(str, positions))
        for past in positions:
            prefix = stream[:past]
            tokens = stream[past : past + args.steps]
            prefilled = prefill_memory(model, prefix)
            runners = {name: EngineRunner(engine, prefix) for name, engine in engines.items()}
            runners["pytorch eager"] = TorchRunner(model, prefilled)
            runners["onnxruntime f32"] = OrtRunner(ort_f32, prefilled)
            runners["onnxruntime int8"] = OrtRunner(ort_int8, prefilled)
            runners.update({name: LlamaCppRunner(llm, prefix) for name, llm in llamas.items()})
            for name, ms in measure(runners, tokens, args.rounds, args.warmup).items():
                rows[name][str(past)] = ms

        ratios = {}
        for name in engines:
            for peer in peers:
                ratios[f"{name} vs {peer}"] = {
                    p: rows[peer][p] / rows[name][p] for p in map(str, positions)
                }
        report["speedup"] = ratios
    report["load_average_after"] = os.getloadavg()
    return report


def print_report(report: dict, out=None) -> None:
    w = (out or sys.stdout).write
    c = report["config"]
    w(f"model: {report['model']}\n")
    w(
        f"  {c['n_layers']} layers, d {c['d_model']}, H {c['n_heads']}, G {c['n_kv_heads']}, "
        f"d_h {c['d_head']}, d_ff {c['d_ff']}, {c['attention']}, horizons {c['horizons']}, "
        f"{report['parameters']:,} parameters\n"
    )
    e = report["onnx_max_abs_logit_error"]
    w(f"ONNX decode step vs PyTorch, max |Δlogit|: f32 {e['f32']:.2e}, int8 {e['int8']:.2e}\n")
    w(
        f"one thread, ms/token: median of {report['steps']} decode steps in {report['rounds']} "
        "interleaved turns per row\n"
    )
    before, after = report["load_average_before"], report["load_average_after"]
    w(
        f"engine kernel path: {report.get('kernel', 'n/a')}; load average (1/5/15 min) before "
        + "/".join(f"{x:.2f}" for x in before)
        + ", after "
        + "/".join(f"{x:.2f}" for x in after)
        + "\n\n"
    )
    positions = [str(p) for p in report["positions"]]
    w(f"{'past tokens':20}" + "".join(f"{p:>10}" for p in positions) + "\n")
    for name, row in report["rows"].items():
        cells = [f"{row[p]:10.3f}" if row.get(p) is not None else f"{'n/a':>10}" for p in positions]
        w(f"{name:20}" + "".join(cells) + "\n")
    if report["speedup"]:
        w("\nengine speed-up (peer ms / engine ms)\n")
        for name, row in report["speedup"].items():
            w(f"{name:40}" + "".join(f"{row[p]:9.2f}x" for p in positions) + "\n")
    for note in report["notes"]:
        w(f"\nNOTE: {note}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .sage file (its weights, dequantized, for the peers)")
    source.add_argument("--checkpoint", help="a training checkpoint (exported for the engine)")
    source.add_argument("--random", metavar="CONFIG", help="a training config, random weights")
    ap.add_argument("--positions", default="128,1024", help="past lengths, comma-separated")
    ap.add_argument("--steps", type=int, default=200, help="timed decode steps per cell")
    ap.add_argument("--rounds", type=int, default=5, help="turns each row takes, interleaved")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps at each turn's start")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
