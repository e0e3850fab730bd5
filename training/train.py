"""Train the sage-edge model with DSMR streaming, on one CPU or under ``torchrun`` (DDP).

    python -m training.train --config training/configs/default.toml --data data/corpus \\
        --out runs/default [--max-steps N] [--resume] [--threads N]
    torchrun --nproc_per_node 2 -m training.train --config ... --data ... --out ...

Each batch slot streams whole pieces left to right, ``segment`` tokens at a time, carrying every
layer's last ``h_l`` keys/values forward (detached); a slot that finishes a piece resets its
memory and starts the next one. Writes ``OUT/last.pt``, ``OUT/best.pt`` (lowest validation
loss), ``OUT/metrics.jsonl`` and, at the end, ``OUT/curve.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from sage_edge import format as sage_format
from sage_edge.tokenizer import Tokenizer
from training import data
from training.model import (
    Memory,
    ModelConfig,
    SageModel,
    load_checkpoint,
    load_model_file,
    schedule_from_dict,
)

IGNORE = -100  # target of padding positions: not part of the loss


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """The optimisation and data settings of a run (the ``[train]`` table of a config)."""

    max_steps: int
    segment: int = 256  # S, tokens per slot per step
    batch_size: int = 16  # slots per process
    seed: int = 0
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_max_tokens: int = 0  # cap on validation tokens per evaluation (0: the whole split)
    log_every: int = 10
    threads: int = 0  # torch.set_num_threads (0: leave torch's default)
    transpose_min: int = -5  # augmentation: semitones drawn uniformly per piece, inclusive
    transpose_max: int = 6
    program_augment: float = 0.0  # augmentation: share of pieces whose programs are redrawn
    # How often each collection's pieces come per epoch (1 when not named; 2.5: twice, and a
    # third time with probability 0.5): tilts a corpus towards the music a model is for.
    collection_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    add_bos_eos: bool = True  # wrap every piece in BOS ... EOS

    def __post_init__(self) -> None:
        for name in ("max_steps", "segment", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1")
        if self.transpose_min > self.transpose_max:
            raise ValueError("train.transpose_min must not exceed train.transpose_max")
        if not 0.0 <= self.program_augment <= 1.0:
            raise ValueError("train.program_augment must be in [0, 1]")
        for collection, weight in self.collection_weights.items():
            if not weight >= 0:
                raise ValueError(f"train.collection_weights.{collection} must be at least 0")


def load_config(path: str | os.PathLike) -> tuple[str, dict, TrainConfig]:
    """``(name, model table, TrainConfig)`` of a TOML config file."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    unknown = set(raw) - {"name", "model", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)}")
    train_table = raw.get("train", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(train_table) - fields:
        raise ValueError(f"{path}: unknown [train] keys {sorted(set(train_table) - fields)}")
    return raw.get("name", Path(path).stem), raw["model"], TrainConfig(**train_table)


def build_model_config(model_table: dict, tokenizer: Tokenizer) -> ModelConfig:
    """The model table of a config plus the tokenizer's vocabulary and family table."""
    table = dict(model_table)
    schedule = schedule_from_dict(table["n_layers"], table.pop("schedule"))
    return ModelConfig(
        vocab_size=tokenizer.vocab_size,
        families=tokenizer.families.tolist(),
        horizons=list(schedule.horizons),
        **table,
    )


# --------------------------------------------------------------------------------------------
# Data: whole pieces streamed through batch slots


@dataclass
class Slot:
    piece: int = -1  # index into the stream's pieces; -1: idle
    semitones: int = 0
    programs_seed: int = -1  # seed of the piece's program redraw; -1: its own programs
    position: int = 0  # index of the next input token in the piece's sequence


class PieceStream:
    """Feeds each batch slot whole pieces, left to right, ``segment`` tokens at a time.

    ``next_batch()`` gives inputs [B, S], targets [B, S] (the next token, ``IGNORE`` on padding)
    and ``starts_piece`` [B] (the slot's memory must be reset first). Training streams loop
    forever over a fresh permutation each epoch with a random transposition per piece (and, for a
    ``program_augment`` share of them, redrawn programs: ``data.redraw_programs``); evaluation
    streams (``shuffle=False``) take every piece once, untransposed, then run dry.
    ``weights`` (per piece, training streams only) is how many times a piece comes per epoch on
    average: the integer part always, the fraction by chance.
    """

    def __init__(
        self,
        pieces: list[np.ndarray],
        tokenizer: Tokenizer,
        batch_size: int,
        segment: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        transpose_range: tuple[int, int] | None = None,
        program_augment: float = 0.0,
        add_bos_eos: bool = True,
        weights: np.ndarray | None = None,
    ):
        self.pieces = pieces
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.tokenizer = tokenizer
        self.batch_size, self.segment = batch_size, segment
        self.shuffle, self.transpose_range = shuffle, transpose_range
        self.program_augment = program_augment
        self.bos, self.eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
        self.pad = tokenizer.id_of("PAD_None")
        self.add_bos_eos = add_bos_eos
        self.rng = np.random.default_rng(seed)
        self.epoch, self.cursor = 0, 0
        self.order = self._new_order()
        self.slots = [Slot() for _ in range(batch_size)]
        self._sequences: list[np.ndarray | None] = [None] * batch_size

    def _new_order(self) -> np.ndarray:
        n = len(self.pieces)
        if not self.shuffle:
            return np.arange(n)
        if self.weights is None:
            return self.rng.permutation(n)
        whole = np.floor(self.weights)
        counts = whole + (self.rng.random(n) < self.weights - whole)
        return self.rng.permutation(np.repeat(np.arange(n), counts.astype(np.int64)))

    def _next_piece(self) -> tuple[int, int, int] | None:
        """The next piece index, its transposition and its program seed (-1: none); None when
        an eval stream runs dry."""
        if self.cursor == len(self.order):
            if not self.shuffle or not len(self.order):
                return None
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._new_order()
        piece = int(self.order[self.cursor])
        self.cursor += 1
        semitones = 0
        if self.transpose_range is not None:
            low, high = self.transpose_range
            semitones = int(self.rng.integers(low, high + 1))
        programs_seed = -1
        if self.program_augment > 0 and self.rng.random() < self.program_augment:
            programs_seed = int(self.rng.integers(2**31))  # the slot keeps it: exact resume
        return piece, semitones, programs_seed

    def _sequence(self, slot: Slot) -> np.ndarray:
        """The token ids a slot streams: the (transposed, re-orchestrated) piece, in BOS ... EOS."""
        ids = self.pieces[slot.piece]
        shifted = data.transpose(ids, slot.semitones, self.tokenizer)
        if shifted is None:  # a note would leave the pitch range: keep the original key
            shifted = ids
        if slot.programs_seed >= 0:  # after transposing: instruments must hold the new range
            rng = np.random.default_rng(slot.programs_seed)
            shifted = data.redraw_programs(shifted, rng, self.tokenizer)
        if self.add_bos_eos:
            shifted = np.concatenate([[self.bos], shifted, [self.eos]])
        return np.asarray(shifted, dtype=np.int64)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, S = self.batch_size, self.segment
        inputs = np.full((B, S), self.pad, dtype=np.int64)
        targets = np.full((B, S), IGNORE, dtype=np.int64)
        starts_piece = np.zeros(B, dtype=bool)
        for b, slot in enumerate(self.slots):
            sequence = self._sequences[b]
            if slot.piece >= 0 and sequence is None:  # restored from a checkpoint
                sequence = self._sequences[b] = self._sequence(slot)
            while slot.piece < 0 or slot.position >= len(sequence) - 1:
                chosen = self._next_piece()
                if chosen is None:
                    slot.piece, sequence = -1, None
                    break
                slot.piece, slot.semitones, slot.programs_seed = chosen
                slot.position = 0
                sequence = self._sequences[b] = self._sequence(slot)
                starts_piece[b] = True
            if sequence is None:
                continue
            chunk = sequence[slot.position : slot.position + S + 1]
            n = len(chunk) - 1
            inputs[b, :n], targets[b, :n] = chunk[:-1], chunk[1:]
            slot.position += n
        return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(starts_piece)

    def state(self) -> dict:
        return {
            "rng": json.dumps(self.rng.bit_generator.state),
            "epoch": self.epoch,
            "cursor": self.cursor,
            "order": self.order.tolist(),
            "slots": [dataclasses.asdict(s) for s in self.slots],
        }

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.slots = [Slot(**s) for s in state["slots"]]
        self._sequences = [None] * self.batch_size


def token_count(pieces: list[np.ndarray]) -> int:
    return sum(len(p) for p in pieces)


def limit_tokens(pieces: list[np.ndarray], max_tokens: int) -> list[np.ndarray]:
    """Pieces adding up to at least ``max_tokens`` (all when 0): every ``k``-th piece, ``k`` the
    split's tokens over ``max_tokens``, so every collection of the (sorted) split is represented
    rather than the first one alone."""
    if max_tokens <= 0:
        return pieces
    chosen = pieces[:: max(1, token_count(pieces) // max_tokens)]
    total = np.cumsum([len(p) for p in chosen])
    return chosen[: int(np.searchsorted(total, max_tokens)) + 1]


# --------------------------------------------------------------------------------------------
# Distributed helpers (single process when not launched by torchrun)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> tuple[Dist, torch.device]:
    if "RANK" not in os.environ:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Dist(), device
    env = Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    )
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return env, device


def all_sum(values: list[float], env: Dist, device: torch.device) -> list[float]:
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj, env: Dist) -> list:
    if not env.enabled:
        return [obj]
    out = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def parameter_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes, in name order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Training


class SegmentStep(nn.Module):
    """One segment forward, as a module DDP can wrap (DDP hooks only ``forward``)."""

    def __init__(self, model: SageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        return self.model.forward_segment(ids, memory)


def segment_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the non-padding targets, and how many there are."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((targets != IGNORE).sum())


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then a cosine down to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: SageModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are not decayed)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": cfg.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


@torch.no_grad()
def evaluate(
    model: SageModel,
    pieces: list[np.ndarray],
    tokenizer: Tokenizer,
    cfg: TrainConfig,
    env: Dist,
    device: torch.device,
    slots: int = 16,
) -> tuple[float, int]:
    """Mean loss per token over whole ``pieces`` (split across ranks), untransposed.

    The pieces stream ``slots`` at a time, longest first, through ``forward_segment`` in chunks of
    ``segment`` tokens: streaming is exact, so this is the loss of a full-sequence forward. A
    shorter piece is padded after its last token, which changes none of its losses (attention is
    causal and the memory only runs forward); sorting by length keeps the padding small. One
    piece at a time left a GPU idle: evaluations took longer than the training between them.
    """
    chunk = cfg.segment
    was_training = model.training
    model.eval()
    bos, eos = tokenizer.id_of("BOS_None"), tokenizer.id_of("EOS_None")
    sequences = []
    for piece in pieces[env.rank :: env.world]:
        ids = np.asarray(piece, dtype=np.int64)
        if cfg.add_bos_eos:
            ids = np.concatenate([[bos], ids, [eos]])
        sequences.append(ids)
    sequences.sort(key=len, reverse=True)
    total_loss, total_tokens = 0.0, 0
    for first in range(0, len(sequences), slots):
        group = sequences[first : first + slots]
        length = len(group[0])
        inputs = np.full((len(group), length), eos, dtype=np.int64)
        targets = np.full((len(group), length), IGNORE, dtype=np.int64)
        for row, ids in enumerate(group):
            inputs[row, : len(ids)] = ids
            targets[row, : len(ids) - 1] = ids[1:]
        inputs, targets = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        memory = model.init_memory(len(group))
        for start in range(0, length - 1, chunk):
            end = min(start + chunk, length - 1)
            logits, memory = model.forward_segment(inputs[:, start:end], memory)
            loss, n = segment_loss(logits, targets[:, start:end])
            total_loss, total_tokens = total_loss + loss.item(), total_tokens + n
    total_loss, total_tokens = all_sum([total_loss, float(total_tokens)], env, device)
    model.train(was_training)
    return total_loss / max(total_tokens, 1.0), int(total_tokens)


def load_initial_weights(
    model: SageModel, path: str | os.PathLike, tokenizer: Tokenizer
) -> list[list[int]] | None:
    """Start ``model`` from a checkpoint (``.pt``) or a model file (``.sage``, dequantized: the
    file's exact weights). The architecture comes from the run's config; the tensors' names and
    shapes and the tokenizer's vocabulary must match it (fine-tuning, not surgery).

    Returns the model file's learned programs as ``[program, notes]`` pairs (None for a
    checkpoint, or a file that records none): the export keeps them (``training.export``)."""
    path = Path(path)
    contents = sage_format.read(path) if path.suffix == ".sage" else None
    source = load_model_file(contents) if contents is not None else load_checkpoint(path)
    theirs = Tokenizer.from_json(source.tokenizer_json).token_table()
    if not np.array_equal(theirs, tokenizer.token_table()):
        raise ValueError(f"{path}: its tokenizer's vocabulary differs from the one trained here")
    try:
        model.load_tensors(source.tensors())
    except ValueError as exc:
        raise ValueError(f"{path}: does not fit the config's model: {exc}") from exc
    learned = contents.learned_programs if contents is not None else None
    return None if learned is None else [[int(p), int(n)] for p, n in sorted(learned.items())]


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curve(metrics: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    valid = [(m["step"], m["valid_loss"]) for m in metrics if "valid_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="valid", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss per token (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or valid:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(args: argparse.Namespace) -> dict:
    env, device = init_distributed()
    name, model_table, cfg = load_config(args.config)
    if args.max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=args.max_steps)
    threads = args.threads if args.threads is not None else cfg.threads
    if threads > 0:
        torch.set_num_threads(threads)
    out = Path(args.out)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer.default()
    train_pieces = data.load_split(args.data, "train", tokenizer)
    collections = data.split_collections(args.data, "train")
    unknown = set(cfg.collection_weights) - set(collections)
    if unknown:
        raise ValueError(f"{args.data}: no train pieces of collections {sorted(unknown)}")
    weights = np.array([cfg.collection_weights.get(c, 1.0) for c in collections])
    valid_pieces = limit_tokens(data.load_split(args.data, "valid", tokenizer), cfg.eval_max_tokens)
    if not train_pieces or not valid_pieces:
        raise ValueError(
            f"{args.data}: the train and valid splits must both hold pieces "
            f"({len(train_pieces)} train, {len(valid_pieces)} valid; a MIDI folder needs at least "
            "two works, and `python -m training.data prepare` gives valid one)"
        )

    torch.manual_seed(cfg.seed)
    model_config = build_model_config(model_table, tokenizer)
    model = SageModel(model_config)
    resuming = args.resume and (out / "last.pt").exists()
    init_programs = None
    if args.init is not None and not resuming:  # a resumed run already holds its own weights
        init_programs = load_initial_weights(model, args.init, tokenizer)
    model = model.to(device)
    optimizer = make_optimizer(model, cfg)
    stream = PieceStream(
        train_pieces[env.rank :: env.world],
        tokenizer,
        cfg.batch_size,
        cfg.segment,
        seed=cfg.seed * 1000 + env.rank,
        transpose_range=(cfg.transpose_min, cfg.transpose_max),
        program_augment=cfg.program_augment,
        add_bos_eos=cfg.add_bos_eos,
        weights=weights[env.rank :: env.world] if cfg.collection_weights else None,
    )
    memory = model.init_memory(cfg.batch_size)
    step, best_valid = 0, math.inf

    metrics_path = out / "metrics.jsonl"
    if resuming:
        checkpoint = torch.load(out / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best_valid = checkpoint["step"], checkpoint["best_valid_loss"]
        saved_config = json.loads(checkpoint["train_config_json"])
        init_programs = saved_config.get("init_programs")
        if args.max_steps is None:  # a --time-budget run set its own
            cfg = dataclasses.replace(cfg, max_steps=saved_config["max_steps"])
        if len(checkpoint["streams"]) == env.world:  # same layout: continue exactly
            stream.load_state(checkpoint["streams"][env.rank])
            memory = Memory.from_state(
                [{k: t.to(device) for k, t in m.items()} for m in checkpoint["memories"][env.rank]]
            )
        if env.main:  # drop what was logged after the checkpoint
            kept = [m for m in read_metrics(metrics_path) if m["step"] <= step]
            metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
    elif env.main:
        metrics_path.write_text("")

    step_module: nn.Module = SegmentStep(model)
    if env.enabled:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None
        )

    def log(record: dict) -> None:
        if env.main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint_payload() -> dict:
        streams = gather(stream.state(), env)
        memories = gather([{k: t.clone().cpu() for k, t in m.items()} for m in memory.state()], env)
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "best_valid_loss": best_valid,
            "model_config": model_config.to_dict(),
            "train_config_json": json.dumps(
                {
                    "name": name,
                    "init": args.init,
                    "init_programs": init_programs,
                    **dataclasses.asdict(cfg),
                }
            ),
            "tokenizer_json": tokenizer.to_json(),
            "streams": streams,
            "memories": memories,
        }

    if env.main:
        print(
            f"{name}: {model.n_parameters() / 1e6:.2f} M parameters, {model_config.attention}, "
            f"horizons {model_config.horizons} (budget {model_config.budget}), "
            f"{len(train_pieces)} train pieces ({token_count(train_pieces)} tokens), "
            f"{len(valid_pieces)} valid pieces, {env.world} process(es), "
            f"{torch.get_num_threads()} threads",
            file=sys.stderr,
        )
    progress = None
    if env.main:
        from tqdm import tqdm

        progress = tqdm(total=cfg.max_steps, initial=step, file=sys.stderr, unit="step")

    stop = cfg.max_steps if args.stop_at is None else min(args.stop_at, cfg.max_steps)
    saved = (step, cfg.max_steps)  # the step and the schedule last.pt holds
    # --time-budget: time steps CALIBRATION[0] to CALIBRATION[1] (after start-up) and fit
    # max_steps to what is left, keeping 15 % for the evaluations and checkpoints not yet timed;
    # fit again after every validation from the pace since CALIBRATION[0], evaluations included,
    # keeping 5 %: runs side by side on one GPU time each other's start-up, and a neighbour that
    # ends or starts changes the pace (docs/training.md, "Six runs from the soup").
    run_start, calibration, calibration_start = time.perf_counter(), (step + 5, step + 45), 0.0
    config_max_steps = cfg.max_steps

    def fit_to_budget(reserve: float) -> None:
        nonlocal cfg, stop
        seconds_per_step = (time.perf_counter() - calibration_start) / (step - calibration[0])
        left = args.time_budget - (time.perf_counter() - run_start)
        fitted = step + int((1.0 - reserve) * left / seconds_per_step)
        fitted = min(gather(max(step, min(config_max_steps, fitted)), env))  # ranks agree
        cfg = dataclasses.replace(cfg, max_steps=fitted)
        stop = fitted if args.stop_at is None else min(args.stop_at, fitted)
        log({"step": step, "max_steps": fitted, "seconds_per_step": seconds_per_step})
        if progress is not None:
            progress.total = fitted

    def validate() -> None:
        """Validation loss at ``step``, logged; last.pt (and best.pt when it improved) saved."""
        nonlocal best_valid, saved, window_start
        eval_start = time.perf_counter()
        valid_loss, valid_tokens = evaluate(model, valid_pieces, tokenizer, cfg, env, device)
        improved = valid_loss < best_valid
        best_valid = min(best_valid, valid_loss)
        log(
            {
                "step": step,
                "valid_loss": valid_loss,
                "valid_ppl": math.exp(valid_loss),
                "valid_tokens": valid_tokens,
            }
        )
        if progress is not None:
            ppl = math.exp(valid_loss)
            progress.write(f"step {step}: valid loss {valid_loss:.4f}, perplexity {ppl:.3f}")
        payload = checkpoint_payload()  # every rank joins the gathers
        if env.main:
            save_checkpoint(out / "last.pt", payload)
            if improved:
                save_checkpoint(out / "best.pt", payload)
        saved = (step, cfg.max_steps)
        # evaluation and checkpoints are not training throughput
        window_start += time.perf_counter() - eval_start

    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    if args.init is not None and not resuming:
        # the starting weights' loss: the mark a fine-tuning must beat; best.pt stays the given
        # weights if no step does
        validate()
    model.train()
    while step < stop:
        inputs, targets, starts_piece = stream.next_batch()
        inputs, targets = inputs.to(device), targets.to(device)
        memory.reset(starts_piece.to(device))
        logits, memory = step_module(inputs, memory)
        loss_sum, n_tokens = segment_loss(logits, targets)
        (loss_sum / max(n_tokens, 1)).backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        window_loss += loss_sum.item()
        window_tokens += n_tokens
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            seconds = time.perf_counter() - window_start
            total_loss, total_tokens = all_sum([window_loss, float(window_tokens)], env, device)
            train_loss = total_loss / max(total_tokens, 1.0)
            tokens_per_s = total_tokens / max(seconds, 1e-9)
            record = {
                "step": step,
                "loss": train_loss,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens_per_s,
                "time": time.time(),
            }
            log(record)
            if progress is not None:
                progress.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
            window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
        if progress is not None:
            progress.update()
        if args.time_budget is not None and step == calibration[0]:
            calibration_start = time.perf_counter()
        if args.time_budget is not None and step == calibration[1]:
            fit_to_budget(reserve=0.15)

        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            validate()
            if args.time_budget is not None and calibration[1] < step < cfg.max_steps:
                fit_to_budget(reserve=0.05)

    if progress is not None:
        progress.close()
    # stopped between evaluations (--stop-at), or before the first step, or a --time-budget refit
    # after the last validation moved the end to this step: keep the state and schedule to resume
    if saved != (step, cfg.max_steps) or step == 0:
        payload = checkpoint_payload()
        if env.main:
            save_checkpoint(out / "last.pt", payload)
    digests = gather(parameter_digest(model), env)
    summary = {
        "step": step,
        "event": "end" if step == cfg.max_steps else "stopped",
        "best_valid_loss": best_valid if math.isfinite(best_valid) else None,
        "param_digests": digests,
    }
    if env.main:
        log(summary)
        plot_curve(
            read_metrics(metrics_path), out / "curve.png", f"{name} ({model_config.attention})"
        )
    if env.enabled:
        # The DDP wrapper holds the process group: release it first, so that the group (and its
        # gloo threads) ends here rather than in interpreter teardown, where a rank could abort.
        del step_module
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--config", required=True, help="a TOML file, e.g. training/configs/default.toml"
    )
    ap.add_argument("--data", required=True, help="a corpus prepared by `python -m training.data`")
    ap.add_argument("--out", required=True, help="run directory for checkpoints and metrics")
    ap.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    ap.add_argument("--threads", type=int, default=None, help="override train.threads")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument(
        "--init",
        default=None,
        help="start from these weights: a checkpoint (.pt) or a model file (.sage), e.g. "
        "sage_edge/models/default.sage to fine-tune on --data (ignored when --resume finds "
        "OUT/last.pt)",
    )
    ap.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fit the run to this wall-clock budget (a lent GPU, a session): after a few steps "
        "the measured step time sets max_steps (never above the config's) and the cosine ends "
        "there; the value is kept in the checkpoint, so --resume continues the same schedule",
    )
    ap.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step as if interrupted (the schedule still ends at max_steps); "
        "--resume continues exactly",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
