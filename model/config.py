"""The network's configuration: a frozen dataclass, and the image facts every module shares.

The named presets (network + training recipe) live in training/presets.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from model.errors import CheckpointError

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10


@dataclass(frozen=True)
class CVAEConfig:
    """Sizes of the CVAE; the checkpoint stores it so the network is rebuilt from what was saved."""

    encoder_hidden: tuple[int, ...] = (512, 512)
    decoder_hidden: tuple[int, ...] = (512, 512)
    latent_dim: int = 256
    # Feed the one-hot digit to every decoder layer, not only the first: the decoder then cannot
    # ignore y, which keeps the class out of z (style transfer across digits works).
    label_every_layer: bool = False
    # "mlp": the reference decoder. "conv": the MLP ends in a (channels[0], 7, 7) map that two
    # stride-2 transposed convolutions bring to 28x28 (the label is added to each map as a bias).
    decoder: str = "mlp"
    # "mlp": the reference encoder. "conv": two stride-2 convolutions (conv_channels reversed) read
    # the image before the encoder MLP.
    encoder: str = "mlp"
    conv_channels: tuple[int, ...] = (64, 32)
    image_pixels: int = IMAGE_PIXELS
    num_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or not self.encoder_hidden or not self.decoder_hidden:
            raise ValueError("latent_dim must be >= 1 and both MLPs need at least one hidden layer")
        if min(self.encoder_hidden + self.decoder_hidden) < 1:
            raise ValueError("hidden widths must be >= 1")
        if {self.decoder, self.encoder} - {"mlp", "conv"} or len(self.conv_channels) != 2:
            raise ValueError("encoder and decoder must be 'mlp' or 'conv' (with two conv_channels)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (tuples become lists)."""
        data = asdict(self)
        data["encoder_hidden"] = list(self.encoder_hidden)
        data["decoder_hidden"] = list(self.decoder_hidden)
        data["conv_channels"] = list(self.conv_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CVAEConfig:
        """Rebuild a config from `to_dict` output; unknown keys mean a newer, incompatible format."""
        if not isinstance(data, dict):
            raise CheckpointError("checkpoint config is not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(f"checkpoint config has unknown fields {sorted(unknown)}")
        try:
            values = dict(data)
            for key in ("encoder_hidden", "decoder_hidden", "conv_channels"):
                if key in values:
                    values[key] = tuple(int(v) for v in values[key])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint config is invalid: {exc}") from exc
