"""Shared helpers for the LRP tests."""
import torch
from torch import nn


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


class ResidualConv1d(nn.Module):
    """conv -> relu -> [conv -> relu -> conv] + skip (lrp.Sum) -> relu -> pool -> flatten -> linear.

    Input (B, 2, 8), 3 classes; used by the layer-matrix tests (with and without composites).
    """

    def __init__(self):
        from spectralens import lrp

        super().__init__()
        torch.manual_seed(3)
        self.stem, self.r0 = nn.Conv1d(2, 3, 3, padding=1), nn.ReLU()
        self.c1, self.r1, self.c2 = nn.Conv1d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 3, 3, padding=1)
        self.add, self.r2, self.pool = lrp.Sum(), nn.ReLU(), nn.MaxPool1d(2)
        self.fc = nn.Linear(3 * 4, 3)

    def forward(self, x):
        h = self.r0(self.stem(x))
        h = self.r2(self.add(self.c2(self.r1(self.c1(h))), h))
        return self.fc(self.pool(h).flatten(1))  # functional flatten: recognised as a reshape
