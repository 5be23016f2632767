"""Built-in character-level Transformer language model on text that ships with Python itself.

The corpus is a fixed list of the standard library's own source files (code and docstrings),
read from this interpreter's installation: no download, the same text on every run.
"""

from __future__ import annotations

import functools
import math
import os
import sysconfig

import torch
import torch.nn.functional as F
from torch import nn

from adamtune.errors import WorkloadError
from adamtune.workloads._base import Workload, accuracy, cross_entropy

CONTEXT = 64
VOCAB = 128  # ASCII; other characters become '?'
_FILES = ("textwrap.py", "argparse.py", "difflib.py", "string.py", "calendar.py", "shlex.py", "fractions.py")
_MAX_CHARS = 300_000
_VALID_FRACTION = 0.1


@functools.lru_cache(maxsize=1)
def _corpus() -> str:
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in _FILES:
        path = os.path.join(stdlib, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    text = "\n".join(parts)[:_MAX_CHARS]
    if len(text) < 50_000:
        raise WorkloadError(f"charlm: found too little standard-library text under {stdlib}")
    return text


@functools.lru_cache(maxsize=1)
def _windows() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    data = bytearray(c if c < VOCAB else ord("?") for c in _corpus().encode("ascii", "replace"))
    ids = torch.tensor(list(data), dtype=torch.long)
    n = (len(ids) - 1) // CONTEXT
    x = ids[: n * CONTEXT].reshape(n, CONTEXT)
    y = ids[1: n * CONTEXT + 1].reshape(n, CONTEXT)
    n_valid = max(1, int(n * _VALID_FRACTION))
    # The validation windows are the end of the corpus: text the model never trains on.
    return (x[:-n_valid], y[:-n_valid]), (x[-n_valid:], y[-n_valid:])


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        # Written out (not scaled_dot_product_attention) so torch.func.vmap can batch it.
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A small GPT-style decoder: token + position embeddings, pre-norm blocks, linear head."""

    def __init__(self, d: int = 48, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(CONTEXT, d)
        self.blocks = nn.Sequential(*[_Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[-1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def charlm() -> Workload:
    """Character-level Transformer LM trained from scratch on standard-library source text (task: llm,
    pretraining: the transformer task's windows are for fine-tuning)."""
    train, valid = _windows()
    return Workload(
        name="charlm", model=CharTransformer, train_data=train, valid_data=valid,
        loss=cross_entropy, metrics={"accuracy": accuracy},
        steps=250, batch_size=16, eval_every=50, task="llm", eval_batch_size=256,
    )
