"""A small CNN digit classifier: the judge of generated digits in evaluation (not part of the CVAE)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.config import IMAGE_SIDE, NUM_CLASSES


@dataclass(frozen=True)
class ClassifierConfig:
    """Channel widths of the two conv blocks and the dense layer."""

    channels: tuple[int, int] = (32, 64)
    hidden: int = 128
    dropout: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return cls(
            channels=(int(data["channels"][0]), int(data["channels"][1])),
            hidden=int(data["hidden"]),
            dropout=float(data["dropout"]),
        )


class DigitClassifier(nn.Module):
    """conv(5x5)-pool-conv(5x5)-pool-dense over IMAGE_SIDE-square images in [0, 1]: logits (B, 10)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * (IMAGE_SIDE // 4) ** 2, config.hidden)  # two 2x poolings
        self.fc2 = nn.Linear(config.hidden, NUM_CLASSES)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)  # (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, c2, 7, 7)
        h = self.dropout(F.relu(self.fc1(h.flatten(1))))
        return self.fc2(h)
