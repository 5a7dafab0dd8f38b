"""CPU latency of two models compared fairly: timed alternately, medians."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def paired_latency(first: nn.Module, second: nn.Module, input_shape: tuple[int, ...], batch: int,
                   repeats: int = 5) -> tuple[float, float]:
    """Median latencies of two models measured alternately (so load changes hit both alike)."""
    first.eval(), second.eval()
    x = torch.randn(batch, *input_shape)
    first(x), second(x)
    a, b = [], []
    for _ in range(repeats):
        for model, times in ((first, a), (second, b)):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)
