"""DINO's projection head (facebookresearch/dinov2 ``dinov2/layers/dino_head.py``): MLP ->
bottleneck -> L2 normalisation -> weight-normalised prototype layer with its norm fixed to 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PrototypeLayer(nn.Module):
    """DINO's weight-normalised last layer (no bias) with the norm g fixed to 1 (``norm_last_layer``):
    each prototype (a row of the weight) is L2-normalised in the forward."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear, GELU between) -> bottleneck -> L2 normalisation -> prototypes."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int = 3):
        super().__init__()
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = PrototypeLayer(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)
