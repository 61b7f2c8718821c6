"""A small GPT-2 style decoder (nanoGPT-like) for the Study B pretraining runs.

As the authors' model: pre-LN blocks, token embeddings multiplied by sqrt(d_model) before
the learned positions are added, untied input/output embeddings, tanh-approximated GELU
MLP (4x), no dropout, N(0, 0.02) initialisation with only the MLP output projection
scaled by 1/sqrt(2 * n_layer) (the attention output projection keeps std 0.02).
Attention goes through
``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``: no causal mask is
materialised and PyTorch picks a fused (flash / memory-efficient) kernel where it can.

``attention="naive"`` builds the same network with hand-written attention and a
materialised causal-mask buffer, as in the authors' code; it has exactly the same
parameters (the mask buffer is not persistent), so the two can share a state dict. It
exists for the throughput benchmark and the equivalence test.

Weights are saved as ``model.safetensors`` + ``config.json`` (no pickle).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from langskew.errors import LangskewError, require_positive

if TYPE_CHECKING:
    from langskew.workflow import Job

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: Named sizes (the paper's mini/small/medium, plus a tiny one for tests and CPU runs).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "d_model": 128, "n_head": 4},
    "mini": {"n_layer": 4, "d_model": 512, "n_head": 8, "head_dim": 32},
    "small": {"n_layer": 12, "d_model": 768, "n_head": 12},
    "medium": {"n_layer": 24, "d_model": 1024, "n_head": 16},
}


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    context: int = 512
    head_dim: int | None = None  # width of one attention head; None: d_model / n_head

    def __post_init__(self) -> None:
        require_positive("model", {key: getattr(self, key) for key in
                                   ("vocab_size", "n_layer", "d_model", "n_head", "context")})
        if self.head_dim is None:
            if self.d_model % self.n_head:
                raise LangskewError(f"model: d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                                    f"set head_dim")
            self.head_dim = self.d_model // self.n_head
        require_positive("model", {"head_dim": self.head_dim})

    @property
    def attn_width(self) -> int:
        """Width of the attention (queries, keys, values of all heads side by side): n_head x head_dim."""
        return self.n_head * int(self.head_dim)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused SDPA; ``n_head`` heads of ``head_dim`` each."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim, width = cfg.n_head, int(cfg.head_dim), cfg.attn_width
        self.qkv = nn.Linear(cfg.d_model, 3 * width)
        self.proj = nn.Linear(width, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (batch, time, d_model)
        w = self.n_head * self.head_dim  # attention width
        q, k, v = self.qkv(x).split(w, dim=2)  # each (b, t, w)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))  # (b, heads, t, hd)
        y = self.attend(q, k, v)  # (b, heads, t, head_dim)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, w))  # heads side by side again: (b, t, w) -> (b, t, d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(b, heads, t, head_dim) queries, keys, values -> (b, heads, t, head_dim), causal."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class NaiveCausalSelfAttention(CausalSelfAttention):
    """Hand-written attention with a materialised (context x context) causal mask buffer."""

    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        mask = torch.tril(torch.ones(cfg.context, cfg.context, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, cfg.context, cfg.context), persistent=False)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = q.size(-2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (b, heads, t, t)
        att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))  # no attention to later positions
        return F.softmax(att, dim=-1) @ v  # (b, heads, t, head_dim)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # (b, t, d) -> (b, t, 4d) -> (b, t, d)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig, attention: type[CausalSelfAttention]):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, t, d) -> (b, t, d)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


ATTENTION = {"sdpa": CausalSelfAttention, "naive": NaiveCausalSelfAttention}


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, attention: str = "sdpa"):
        super().__init__()
        if attention not in ATTENTION:
            raise LangskewError(f"model: unknown attention {attention!r}; expected one of {sorted(ATTENTION)}")
        self.cfg = cfg
        self.embed_scale = math.sqrt(cfg.d_model)  # token embeddings scaled before positions are added
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, ATTENTION[attention]) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # untied from wte
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for block in self.blocks:  # only the MLP output projection (the authors' init)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if include_embeddings else n - self.wte.weight.numel() - self.wpe.weight.numel()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_hidden: bool = False,
                ignore_index: int = -100):
        """Logits (B, T, V) and the mean next-token loss (None without targets).

        With ``return_hidden`` a third value is returned: the output of every block,
        before the final LayerNorm (a list of ``n_layer`` tensors (B, T, d)).
        """
        t = idx.size(1)  # idx: (B, T) token ids
        if t > self.cfg.context:
            raise LangskewError(f"model: sequence length {t} exceeds the context {self.cfg.context}")
        pos = torch.arange(t, device=idx.device)  # (T,)
        x = self.wte(idx) * self.embed_scale + self.wpe(pos)  # (B, T, d) + (T, d) -> (B, T, d)
        hidden = []
        for block in self.blocks:
            x = block(x)  # (B, T, d)
            if return_hidden:
                hidden.append(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:  # targets: (B, T), the next token of each position
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=ignore_index)
        return (logits, loss, hidden) if return_hidden else (logits, loss)


def flops_per_token(cfg: GPTConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the weights plus 12 * L * (n_head * head_dim) * T for attention (PaLM, App. B)."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.attn_width * cfg.context


def save_model(model: GPT, directory: str | os.PathLike) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(model.cfg), indent=2, sort_keys=True) + "\n")


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu", attention: str = "sdpa") -> GPT:
    """Rebuild a :class:`GPT` from a directory written by :func:`save_model` (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise LangskewError(f"model: {directory} has no {name}")
    cfg = GPTConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    model = GPT(cfg, attention=attention)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.to(device).eval()


def load_run(job: Job, run: dict, seed: int, parallel_path: str | None = None):
    """What both evaluation stages of a run (perplexity, alignment) start from: the trained model
    (``job.input.model``) and the run's token mixture (``job.input.tokens``), on the GPU when there
    is one; on the CPU the job's threads are used. Returns (model, mixture, device)."""
    from langskew.devices import pick_device, set_threads
    from langskew.study_b.languages import build_mixture

    if not torch.cuda.is_available():
        set_threads(job.threads)
    device = pick_device()
    model = load_model(job.input.model, device=device)
    mixture = build_mixture(dict(run), list(job.input.tokens), int(seed), parallel_path=parallel_path)
    return model, mixture, device
