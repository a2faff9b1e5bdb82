"""The image stem: the first three stages of a ResNet (He et al., 2016), as in OFA's `models/ofa/resnet.py`.

conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (stride 2) -> layer1 -> layer2 (stride 2) -> layer3 (stride 2):
a (B, 1024, H/16, W/16) feature map. Module names follow torchvision/OFA so pretrained stems map one to one.
Written here because torchvision does not import beside torch 2.13 on the project machines.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (Huang et al., 2016): zero a residual branch for a random subset of samples."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


def linear_rates(max_rate: float, count: int) -> list[float]:
    """Drop-path rates rising linearly from 0 to max_rate over count blocks (plain floats: meta-device safe)."""
    return [max_rate * i / max(1, count - 1) for i in range(count)]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with expansion 4 (ResNet v1.5: the stride sits on the 3x3)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_path_rate: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(identity + drop_path(out, self.drop_path_rate, self.training))


class ResNetStem(nn.Module):
    """Stages 1-3 of a ResNet; `layers` gives the blocks per stage (ResNet-50: 3,4,6; ResNet-101: 3,4,23).

    As in OFA's `ResNet._make_layer`, drop-path rates rise linearly from 0 within each stage, and the first
    block of a stage has none. `frozen` (OFA's `--freeze-resnet`, a FrozenBatchNorm2d stem): the batch norms
    stay in eval mode and their affine parameters are not trained.
    """

    out_channels = 1024

    def __init__(
        self, layers: list[int], *, drop_path_rate: float = 0.0, eps: float = 1e-5, frozen: bool = False
    ) -> None:
        super().__init__()
        self.eps = eps
        self.frozen = frozen
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, layers[0], stride=1, drop_path_rate=drop_path_rate)
        self.layer2 = self._make_layer(128, layers[1], stride=2, drop_path_rate=drop_path_rate)
        self.layer3 = self._make_layer(256, layers[2], stride=2, drop_path_rate=drop_path_rate)
        if frozen:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetStem:
        super().train(mode)
        if self.frozen:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def _make_layer(self, planes: int, blocks: int, *, stride: int, drop_path_rate: float) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(planes * Bottleneck.expansion, eps=self.eps),
            )
        rates = linear_rates(drop_path_rate, blocks)
        modules = [Bottleneck(self.inplanes, planes, stride=stride, downsample=downsample, eps=self.eps)]
        self.inplanes = planes * Bottleneck.expansion
        modules += [Bottleneck(self.inplanes, planes, drop_path_rate=r, eps=self.eps) for r in rates[1:]]
        return nn.Sequential(*modules)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 1024, H/16, W/16)
        return x
