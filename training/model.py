"""The reference model: the mathematics of docs/design.md in PyTorch.

A decoder-only, pre-norm transformer with ALiBi positions, SwiGLU feed-forward and no biases,
plus the two ideas sage-edge is built on:

- **AS-KVHS** (``attention="askv"``): each layer holds one key/value projection per attribute
  family, and each token's family chooses the projection that makes its key and value. ``mha``
  and ``gqa`` are the same code with a single family.
- **DSMR**: layer ``l`` attends only to the last ``h_l`` positions of its own layer. Because the
  window is exact and positions enter only as distances, streaming a piece in segments that
  carry each layer's last ``h_l`` keys/values forward equals the full-sequence forward; the C++
  engine's ring buffers implement the same ``forward_segment`` one token at a time.

Parameters are named so that ``state_dict()`` keys are the tensor names of docs/format.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sage_edge.vocab import N_FAMILIES

ATTENTION_MODES = ("mha", "gqa", "askv")
N_ATTRIBUTE_FAMILIES = N_FAMILIES  # special, time, program, pitch, velocity, duration (design.md)


# --------------------------------------------------------------------------------------------
# Configuration and DSMR schedules


@dataclass
class ModelConfig:
    """Every hyperparameter of the network (docs/design.md, "The network")."""

    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int  # H, query heads
    n_kv_heads: int  # G, key/value heads shared by H / G query heads each
    d_ff: int
    attention: str  # "mha" | "gqa" | "askv"
    families: list[int]  # the attribute family (0..5) of every token id
    horizons: list[int]  # DSMR memory of each layer, in tokens
    d_head: int | None = None  # defaults to d_model // n_heads
    norm_eps: float = 1e-5
    # Training-only regularisation (the export and the engine ignore it): dropout on the
    # attention weights, and on the feed-forward output before it joins the residual stream.
    attn_dropout: float = 0.0
    ffn_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.d_head is None:
            self.d_head = self.d_model // self.n_heads if self.n_heads > 0 else 0
        self.families = [int(f) for f in self.families]
        self.horizons = [int(h) for h in self.horizons]
        self.validate()

    @property
    def n_families(self) -> int:
        """``F``: key/value projections per layer."""
        return N_ATTRIBUTE_FAMILIES if self.attention == "askv" else 1

    @property
    def budget(self) -> int:
        """The DSMR recurrent budget ``B = Σ_l h_l``."""
        return sum(self.horizons)

    def validate(self) -> None:
        positive = ("vocab_size", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "d_head")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if self.attention == "mha" and self.n_kv_heads != self.n_heads:
            raise ValueError(
                f"mha needs n_kv_heads == n_heads, got {self.n_kv_heads} and {self.n_heads}"
            )
        if self.attention == "gqa" and self.n_kv_heads == self.n_heads:
            raise ValueError("gqa needs n_kv_heads < n_heads (use mha for n_kv_heads == n_heads)")
        if len(self.families) != self.vocab_size:
            raise ValueError(
                f"families has {len(self.families)} entries for a vocabulary of {self.vocab_size}"
            )
        if any(not 0 <= f < N_ATTRIBUTE_FAMILIES for f in self.families):
            raise ValueError(f"every family must be in 0..{N_ATTRIBUTE_FAMILIES - 1}")
        if len(self.horizons) != self.n_layers:
            raise ValueError(
                f"horizons has {len(self.horizons)} entries for {self.n_layers} layers"
            )
        if any(h < 1 for h in self.horizons):
            raise ValueError(f"every horizon must be at least 1, got {self.horizons}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise ValueError(f"norm_eps must be positive and finite, got {self.norm_eps}")
        for name in ("attn_dropout", "ffn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Schedule:
    """A DSMR schedule: the horizon of every layer."""

    name: str
    horizons: tuple[int, ...]

    @property
    def budget(self) -> int:
        return sum(self.horizons)


def full(n_layers: int, h: int) -> Schedule:
    """Every layer sees the last ``h`` positions: the reference schedule."""
    _check_schedule_args(n_layers, h)
    return Schedule("full", (h,) * n_layers)


def uniform(n_layers: int, budget: int) -> Schedule:
    """The budget split as equally as integers allow (earlier layers take the remainder)."""
    _check_schedule_args(n_layers, budget)
    if budget < n_layers:
        raise ValueError(f"a budget of {budget} cannot give {n_layers} layers a horizon of 1")
    base, extra = divmod(budget, n_layers)
    horizons = tuple(base + 1 if layer < extra else base for layer in range(n_layers))
    return Schedule("uniform", horizons)


def two_scale(n_layers: int, k: int, h_long: int, h_short: int) -> Schedule:
    """The first ``k`` layers see ``h_long`` positions, the rest ``h_short``."""
    _check_schedule_args(n_layers, h_long, h_short)
    if not 0 <= k <= n_layers:
        raise ValueError(f"k must be in 0..{n_layers}, got {k}")
    return Schedule("two_scale", (h_long,) * k + (h_short,) * (n_layers - k))


def schedule_from_dict(n_layers: int, spec: dict) -> Schedule:
    """Build a schedule from a config table such as ``{kind = "two_scale", k = 2, ...}``."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    builders = {"full": full, "uniform": uniform, "two_scale": two_scale}
    if kind not in builders:
        raise ValueError(f"schedule kind must be one of {sorted(builders)}, got {kind!r}")
    return builders[kind](n_layers, **spec)


def _check_schedule_args(*values: int) -> None:
    if any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"layer counts and horizons must be positive integers, got {values}")


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """``m_i = 2^(−8(i+1)/H)``: head ``i`` penalises a key ``m_i`` per token of distance."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])


# --------------------------------------------------------------------------------------------
# DSMR memory


@dataclass
class LayerMemory:
    """One layer's last ``h_l`` keys and values, oldest first, per batch slot."""

    keys: torch.Tensor  # [B, h_l, G, d_h]
    values: torch.Tensor  # [B, h_l, G, d_h]
    valid: torch.Tensor  # [B, h_l] bool: False where no token was ever written (piece start)


@dataclass
class Memory:
    """The DSMR state carried from one segment to the next: every layer's key/value window."""

    layers: list[LayerMemory] = field(default_factory=list)

    def reset(self, slots: torch.Tensor) -> None:
        """Forget everything in the batch slots where ``slots`` (bool [B]) is True.

        A slot that starts a new piece must not attend to the previous piece.
        """
        for layer in self.layers:  # out of place: the old tensors may be saved for backward
            layer.valid = layer.valid & ~slots[:, None]
            layer.keys = layer.keys.masked_fill(slots[:, None, None, None], 0.0)
            layer.values = layer.values.masked_fill(slots[:, None, None, None], 0.0)

    def detach(self) -> Memory:
        return Memory(
            [LayerMemory(m.keys.detach(), m.values.detach(), m.valid) for m in self.layers]
        )

    def state(self) -> list[dict[str, torch.Tensor]]:
        """Plain tensors, for checkpoints."""
        return [dataclasses.asdict(m) for m in self.layers]

    @classmethod
    def from_state(cls, state: list[dict[str, torch.Tensor]]) -> Memory:
        return cls([LayerMemory(**m) for m in state])


# --------------------------------------------------------------------------------------------
# The network


def rmsnorm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x²) + ε) ⊙ g``."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * gain


def project_by_family(u: torch.Tensor, weight: torch.Tensor, family: torch.Tensor) -> torch.Tensor:
    """``W[a(t)] u_t`` for every token: each token projected by its own family's matrix.

    ``u`` [N, d], ``weight`` [F, out, d], ``family`` [N] → [N, out]. Tokens are grouped by family
    so each token pays for one projection only, then put back in their original order.
    """
    n_families = weight.shape[0]
    if n_families == 1:
        return F.linear(u, weight[0])
    order = torch.argsort(family, stable=True)
    counts = torch.bincount(family, minlength=n_families).tolist()
    groups = u[order].split(counts)
    projected = torch.cat([F.linear(group, weight[f]) for f, group in enumerate(groups)])
    return projected[torch.argsort(order)]


class Block(nn.Module):
    """One pre-norm transformer layer with an exact DSMR window of ``horizon`` positions."""

    def __init__(self, config: ModelConfig, horizon: int):
        super().__init__()
        d, d_h = config.d_model, config.d_head
        H, G, n_families = config.n_heads, config.n_kv_heads, config.n_families
        self.n_heads, self.n_kv_heads, self.d_head = H, G, d_h
        self.horizon = horizon
        self.eps = config.norm_eps
        self.attn_dropout = config.attn_dropout
        self.ffn_dropout = nn.Dropout(config.ffn_dropout)

        self.attn_norm = nn.Parameter(torch.ones(d))
        self.wq = nn.Parameter(torch.empty(H * d_h, d))
        self.wk = nn.Parameter(torch.empty(n_families, G * d_h, d))
        self.wv = nn.Parameter(torch.empty(n_families, G * d_h, d))
        self.wo = nn.Parameter(torch.empty(d, H * d_h))
        self.ffn_norm = nn.Parameter(torch.ones(d))
        self.w1 = nn.Parameter(torch.empty(config.d_ff, d))
        self.w3 = nn.Parameter(torch.empty(config.d_ff, d))
        self.w2 = nn.Parameter(torch.empty(d, config.d_ff))

    def forward(
        self,
        x: torch.Tensor,
        family: torch.Tensor,
        slopes: torch.Tensor,
        past: LayerMemory | None,
    ) -> tuple[torch.Tensor, LayerMemory]:
        """``x`` [B, T, d] holds positions ``p0 .. p0+T−1``; ``past`` the ``h_l`` positions before.

        Returns the new residual stream and this layer's memory after the segment, its last
        ``h_l`` keys/values (still attached to the graph; the caller detaches).
        """
        B, T, _ = x.shape
        H, G, d_h = self.n_heads, self.n_kv_heads, self.d_head

        # Attention: queries from every head, keys/values from the token's family projection.
        u = rmsnorm(x, self.attn_norm, self.eps)
        q = F.linear(u, self.wq).view(B, T, H, d_h)
        k = project_by_family(u.view(B * T, -1), self.wk, family.view(-1)).view(B, T, G, d_h)
        v = project_by_family(u.view(B * T, -1), self.wv, family.view(-1)).view(B, T, G, d_h)
        new_valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if past is None:  # a whole sequence: nothing before position 0
            keys, values, valid = k, v, new_valid
        else:
            keys = torch.cat([past.keys, k], dim=1)
            values = torch.cat([past.values, v], dim=1)
            valid = torch.cat([past.valid, new_valid], dim=1)
        x = x + F.linear(self.attend(q, keys, values, valid, slopes), self.wo)

        # SwiGLU feed-forward.
        u = rmsnorm(x, self.ffn_norm, self.eps)
        x = x + self.ffn_dropout(
            F.linear(F.silu(F.linear(u, self.w1)) * F.linear(u, self.w3), self.w2)
        )

        memory = LayerMemory(*self.last_window(keys, values, valid))
        return x, memory

    def attend(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        valid: torch.Tensor,
        slopes: torch.Tensor,
    ) -> torch.Tensor:
        """Grouped-query attention over the exact window ``(p − h_l, p]`` with ALiBi.

        ``q`` [B, T, H, d_h] are the last ``T`` positions; ``keys``/``values`` [B, P+T, G, d_h]
        are the ``P`` positions before them followed by the same ``T``. Returns [B, T, H·d_h].
        """
        B, T, H, d_h = q.shape
        n_keys = keys.shape[1]

        # distance[t, j] = p − j for query t and key j; ALiBi and the window depend on it alone.
        query_pos = torch.arange(n_keys - T, n_keys, device=q.device)
        key_pos = torch.arange(n_keys, device=q.device)
        distance = query_pos[:, None] - key_pos[None, :]  # [T, P+T]
        in_window = (distance >= 0) & (distance < self.horizon)
        allowed = in_window[None] & valid[:, None, :]  # [B, T, P+T]

        # s_ij = q_i·k_j / sqrt(d_h) − m_i (p − j), and −inf outside the window. The fused kernel
        # adds the bias after the scaled product and shares each key/value head between H/G
        # query heads (head i reads key/value head i div (H/G)).
        alibi = -slopes[:, None, None] * distance  # [H, T, P+T]
        bias = alibi.masked_fill(~allowed[:, None], float("-inf"))  # [B, H, T, P+T]
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2),  # [B, H, T, d_h]
            keys.transpose(1, 2),  # [B, G, P+T, d_h]
            values.transpose(1, 2),
            attn_mask=bias,
            dropout_p=self.attn_dropout if self.training else 0.0,
            enable_gqa=True,
        )
        return o.transpose(1, 2).reshape(B, T, H * d_h)

    def last_window(
        self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last ``h_l`` entries, front-padded with invalid zeros when there are fewer."""
        missing = self.horizon - keys.shape[1]
        if missing > 0:
            keys = F.pad(keys, (0, 0, 0, 0, missing, 0))
            values = F.pad(values, (0, 0, 0, 0, missing, 0))
            valid = F.pad(valid, (missing, 0), value=False)
        h = self.horizon
        return keys[:, -h:], values[:, -h:], valid[:, -h:]


class SageModel(nn.Module):
    """The sage-edge transformer. ``state_dict()`` keys are the docs/format.md tensor names."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, V = config.d_model, config.vocab_size
        self.tok_embedding = nn.Parameter(torch.empty(V, d))
        self.register_buffer("alibi_slopes", alibi_slopes(config.n_heads))
        self.layers = nn.ModuleList(Block(config, h) for h in config.horizons)
        self.final_norm = nn.Parameter(torch.ones(d))
        self.output = nn.Parameter(torch.empty(V, d))
        # The id → family table; not a model tensor (the file's vocabulary carries it).
        family = torch.tensor(config.families, dtype=torch.long)
        if config.n_families == 1:
            family = torch.zeros_like(family)
        self.register_buffer("token_family", family, persistent=False)
        self.tokenizer_json: str | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.tok_embedding, std=std)
        nn.init.normal_(self.output, std=std)
        for block in self.layers:
            for w in (block.wq, block.wk, block.wv, block.w1, block.w3):
                nn.init.normal_(w, std=std)
            for w in (block.wo, block.w2):
                nn.init.normal_(w, std=residual_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Full-sequence forward: ``ids`` [B, T] from the start of a piece → logits [B, T, V]."""
        logits, _ = self._run(ids, None)
        return logits

    def init_memory(self, batch_size: int) -> Memory:
        """An empty memory: no position before the first segment is attended."""
        c, device = self.config, self.tok_embedding.device
        layers = []
        for h in c.horizons:
            shape = (batch_size, h, c.n_kv_heads, c.d_head)
            layers.append(
                LayerMemory(
                    keys=torch.zeros(shape, device=device),
                    values=torch.zeros(shape, device=device),
                    valid=torch.zeros(batch_size, h, dtype=torch.bool, device=device),
                )
            )
        return Memory(layers)

    def forward_segment(self, ids: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, Memory]:
        """The next ``T`` tokens of each slot after what ``memory`` holds.

        Returns logits [B, T, V] and the new memory (detached). ``T = 1`` is the engine's decode
        step.
        """
        logits, new_layers = self._run(ids, memory.layers)
        return logits, Memory(new_layers).detach()

    def _run(
        self, ids: torch.Tensor, past: list[LayerMemory] | None
    ) -> tuple[torch.Tensor, list[LayerMemory]]:
        family = self.token_family[ids]
        x = self.tok_embedding[ids]
        memory = []
        for index, block in enumerate(self.layers):
            layer_past = None if past is None else past[index]
            x, layer_memory = block(x, family, self.alibi_slopes, layer_past)
            memory.append(layer_memory)
        logits = F.linear(rmsnorm(x, self.final_norm, self.config.norm_eps), self.output)
        return logits, memory

    # ----------------------------------------------------------------------------------------
    # Tensors by their file names

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of docs/format.md "Tensors", by name (detached, on the model's device)."""
        return {name: t.detach() for name, t in self.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The inverse of ``tensors()`` (e.g. dequantized weights); names and shapes must match."""
        expected = self.state_dict()
        if set(tensors) != set(expected):
            missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
            raise ValueError(
                f"tensor names differ: missing {sorted(missing)}, extra {sorted(extra)}"
            )
        for name, t in tensors.items():
            t = torch.as_tensor(t)
            if tuple(t.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"{name}: shape {tuple(t.shape)}, expected {tuple(expected[name].shape)}"
                )
        self.load_state_dict({name: torch.as_tensor(t) for name, t in tensors.items()})

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> SageModel:
    """A trained model in eval mode, with ``model.tokenizer_json`` and ``model.checkpoint_info``
    (step, training config, validation loss) attached."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    config = ModelConfig(**checkpoint["model_config"])
    model = SageModel(config)
    model.load_state_dict(checkpoint["model"])
    model.tokenizer_json = checkpoint["tokenizer_json"]
    model.checkpoint_info = {
        "step": checkpoint["step"],
        "train_config": json.loads(checkpoint["train_config_json"]),
        "best_valid_loss": checkpoint.get("best_valid_loss"),
    }
    return model.eval()


def load_model_file(model_file) -> SageModel:
    """The reference model in eval mode holding a ``.sage`` file's weights (dequantized to f32),
    with ``model.tokenizer_json`` attached; ``model_file`` is a path or a read
    ``sage_edge.format.ModelFile``."""
    from sage_edge import format as sage_format

    if not isinstance(model_file, sage_format.ModelFile):
        model_file = sage_format.read(model_file)
    m = model_file
    config = ModelConfig(
        vocab_size=m.vocab_size,
        n_layers=m.n_layers,
        d_model=m.d_model,
        n_heads=m.n_heads,
        n_kv_heads=m.n_kv_heads,
        d_head=m.d_head,
        d_ff=m.d_ff,
        attention=m.attention,
        families=m.vocabulary["family"].tolist(),
        horizons=list(m.horizons),
        norm_eps=m.norm_eps,
    )
    model = SageModel(config)
    model.load_tensors(
        {name: torch.from_numpy(t.copy()) for name, t in m.dequantized_tensors().items()}
    )
    model.tokenizer_json = m.tokenizer_json()
    return model.eval()
