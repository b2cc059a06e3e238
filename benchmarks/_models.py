"""Models and synthetic data for the benchmarks.

Everything is built from fixed seeds, so every run of every variant starts from the same
weights and sees the same batches: the variants differ only in what they add to the loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

SEED = 0


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency of torchmagic, but the models do not need it
        return
    np.random.seed(seed)


def cifar_cnn() -> nn.Module:
    """The classic CIFAR-10 example's shape: 3x32x32 -> conv 32 -> pool -> conv 64 -> pool -> fc 10."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    )


def mnist_mlp() -> nn.Module:
    """784 -> 512 -> 256 -> 10 with ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample
    batch_size: int
    classes: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    step_scale: int = 1  # timed runs take step_scale * --steps steps (short steps need more)

    def make_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`count` distinct synthetic batches, generated once from a private generator."""
        gen = torch.Generator().manual_seed(SEED + 1)
        return [
            (
                torch.randn((self.batch_size, *self.input_shape), generator=gen),
                torch.randint(0, self.classes, (self.batch_size,), generator=gen),
            )
            for _ in range(count)
        ]

    def make_run(self) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
        """A fresh model, optimizer and loss, identical for every run."""
        seed_everything()
        model = self.build()
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)
        return model, optimizer, nn.CrossEntropyLoss()


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec("cnn", cifar_cnn, (3, 32, 32), batch_size=32, step_scale=1),
    "mlp": ModelSpec("mlp", mnist_mlp, (1, 28, 28), batch_size=128, step_scale=2),
}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, crit: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The textbook step the CPU hot-path benchmarks time."""
    opt.zero_grad()
    crit(model(x), y).backward()
    opt.step()


def cycle_batches(batches: list, steps: int) -> list:
    """A loader of `steps` batches that reuses the distinct ones (bounded memory, has a len)."""
    return [batches[i % len(batches)] for i in range(steps)]


def tiny_mlp() -> nn.Module:
    """32 -> 64 -> 10: a step is a fraction of a millisecond, so any fixed cost per step shows."""
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


def small_transformer(layers: int = 12) -> nn.Module:
    """A 12-layer TransformerEncoder (d_model 64, 4 heads) over 16 tokens, then a linear head:
    about 110 module calls per step, each doing little work."""
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, layers, enable_nested_tensor=False), nn.Flatten(), nn.Linear(64 * 16, 10))


HOT_PATH_MODELS: dict[str, ModelSpec] = {
    "tiny-mlp": ModelSpec("tiny-mlp", tiny_mlp, (32,), batch_size=64),
    "transformer-12": ModelSpec("transformer-12", small_transformer, (16, 64), batch_size=8),
    "cifar-cnn": ModelSpec("cifar-cnn", cifar_cnn, (3, 32, 32), batch_size=32),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2's decoder from its config alone (no download): token and position embeddings,
    pre-norm blocks, a final norm and a head tied to the token embedding. With the defaults it
    is GPT-2 small: 12 layers, width 768, 12 heads, 124 M parameters."""

    def __init__(self, vocab: int = 50257, context: int = 1024, width: int = 768, layers: int = 12, heads: int = 12) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(DecoderBlock(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
