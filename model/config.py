"""The network's configuration: a frozen dataclass, and the image facts every module shares.

The named presets (network + training recipe) live in training/presets.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from model.errors import CheckpointError

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

# Bounds a config must respect before any layer is built: a stored config is data from a file, and a
# 20,000-wide layer or a latent of 1e13 would otherwise be found out only by a multi-GB allocation.
MAX_WIDTH = 8192  # hidden and latent widths
MAX_LAYERS = 8  # hidden layers per MLP
MAX_CHANNELS = 1024
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights


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
        self._check_bounds()  # latent_dim, every width and the two conv_channels are checked there
        if not self.encoder_hidden or not self.decoder_hidden:
            raise ValueError("both MLPs need at least one hidden layer")
        if {self.decoder, self.encoder} - {"mlp", "conv"}:
            raise ValueError("encoder and decoder must be 'mlp' or 'conv'")

    def _check_bounds(self) -> None:
        """Types and sizes within the bounds above (ValueError), checked by arithmetic only."""
        if len(self.conv_channels) != 2:
            raise ValueError("conv_channels must have two values")
        sizes = {
            "latent_dim": (self.latent_dim, MAX_WIDTH),
            "image_pixels": (self.image_pixels, IMAGE_PIXELS),
            "num_classes": (self.num_classes, NUM_CLASSES),
        }
        for i, width in enumerate(self.encoder_hidden):
            sizes[f"encoder_hidden[{i}]"] = (width, MAX_WIDTH)
        for i, width in enumerate(self.decoder_hidden):
            sizes[f"decoder_hidden[{i}]"] = (width, MAX_WIDTH)
        for i, width in enumerate(self.conv_channels):
            sizes[f"conv_channels[{i}]"] = (width, MAX_CHANNELS)
        for name, (value, limit) in sizes.items():
            if type(value) is not int or not 1 <= value <= limit:
                raise ValueError(f"{name} must be an integer from 1 to {limit}, got {value!r}")
        if len(self.encoder_hidden) > MAX_LAYERS or len(self.decoder_hidden) > MAX_LAYERS:
            raise ValueError(f"each MLP may have at most {MAX_LAYERS} hidden layers")
        if type(self.label_every_layer) is not bool:
            raise ValueError("label_every_layer must be true or false")
        if self.parameter_bound() > MAX_PARAMETERS:
            raise ValueError(
                f"the network would have about {self.parameter_bound():,} parameters, "
                f"more than the {MAX_PARAMETERS:,} allowed"
            )

    def parameter_bound(self) -> int:
        """An upper bound of the network's parameter count (every layer given the label and a bias)."""
        cond, c0, c1 = self.num_classes, self.conv_channels[0], self.conv_channels[1]
        widths = [self.image_pixels + c0 * 49 + cond, *self.encoder_hidden, 2 * self.latent_dim]
        total = sum((a + cond + 1) * b for a, b in zip(widths, widths[1:], strict=False))
        widths = [self.latent_dim + cond, *self.decoder_hidden, self.image_pixels + c0 * 49]
        total += sum((a + cond + 1) * b for a, b in zip(widths, widths[1:], strict=False))
        return total + 16 * (c0 * c1 + c0 + c1) + 2 * cond * (c0 + c1)

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
