"""Generalised-mean pooling, in a module of its own so that importing the plugin imports no torch."""

import torch
from torch import nn


class GeM(nn.Module):
    """(mean over the image of x^p)^(1/p): p=1 is average pooling, a large p nears max pooling
    (Radenovic et al., 2018). Returns (N, C), as timm's pooling with flatten does."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p).to(x.dtype)
