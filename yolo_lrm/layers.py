"""The Darknet layer types as small `nn.Module`s, each reproducing Darknet's semantics exactly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Darknet activations: leaky uses slope 0.1 (not PyTorch's 0.01); relu6 (min(max(x, 0), 6)) is our extension."""
    if name == 'leaky':
        return F.leaky_relu(x, 0.1)
    if name == 'relu':
        return F.relu(x)
    if name == 'relu6':
        return F.relu6(x)
    if name == 'logistic':
        return torch.sigmoid(x)
    return x


class ConvBlock(nn.Module):
    """`[convolutional]`: conv (no bias when batch-normalised), BatchNorm2d(eps=1e-5, momentum=0.01), activation.

    `darknet_bn=True` makes inference use Darknet's CPU formula `(x - mean) / (sqrt(var) + 1e-6)` instead of
    `sqrt(var + 1e-5)`; training always uses standard batch norm (= cuDNN, how the released weights were trained).
    """

    def __init__(self, c_in: int, filters: int, size: int, stride: int, padding: int, groups: int,
                 batch_normalize: bool, activation: str):
        super().__init__()
        self.conv = nn.Conv2d(c_in, filters, size, stride, padding, groups=groups, bias=not batch_normalize)
        self.bn = nn.BatchNorm2d(filters, eps=1e-5, momentum=0.01) if batch_normalize else None
        self.activation = activation
        self.darknet_bn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            if self.darknet_bn and not self.training:
                scale, shift = self.bn_affine()
                x = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
            else:
                x = self.bn(x)
        return activate(x, self.activation)

    def bn_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference batch norm as `x * scale + shift`, with the formula this block is set to use."""
        bn = self.bn
        std = bn.running_var.sqrt() + 1e-6 if self.darknet_bn else (bn.running_var + bn.eps).sqrt()
        scale = bn.weight / std
        return scale, bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the inference batch norm into the convolution (same outputs within float rounding)."""
        if self.bn is None:
            return
        scale, shift = self.bn_affine()
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True).to(conv.weight)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(shift)
        self.conv, self.bn = fused, None


class MaxPool(nn.Module):
    """`[maxpool]` with Darknet's geometry: `out = (in + padding - size)//stride + 1`, window of output y starting at
    `y*stride - padding//2`, taps outside the image count as -inf (so size 2 / stride 1 keeps 13x13)."""

    def __init__(self, size: int, stride: int, padding: int):
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def out_size(self, n: int) -> int:
        """Output height/width for an input of `n` pixels."""
        return (n + self.padding - self.size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        before = self.padding // 2
        # pad only as far as the last window actually reaches (size 2 / stride 2 on even input needs none)
        after_h = max(0, (self.out_size(h) - 1) * self.stride + self.size - before - h)
        after_w = max(0, (self.out_size(w) - 1) * self.stride + self.size - before - w)
        if before or after_h or after_w:
            # edge copies, not -inf: every window that reaches outside holds the edge cell, so the maxima (and
            # gradients) are the same, and an ONNX export has no infinite pad value for INT8 to quantize (to NaN)
            x = F.pad(x, (before, after_w, before, after_h), mode='replicate')
        return F.max_pool2d(x, self.size, self.stride)


class GlobalAvgPool(nn.Module):
    """`[avgpool]`: mean over H and W, output C x 1 x 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Route(nn.Module):
    """`[route]`: concatenation of earlier layers' outputs in the listed order (absolute indices)."""

    def __init__(self, sources: list[int]):
        super().__init__()
        self.sources = sources

    def forward(self, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        parts = [outputs[i] for i in self.sources]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class Reorg(nn.Module):
    """`[reorg]`: Darknet's passthrough permutation (NOT pixel_unshuffle / space-to-depth).

    Darknet reads the (C, H, W) input buffer as (C/s², H·s, W·s) and writes it as (C·s², H/s, W/s).
    """

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.stride
        x = x.reshape(b, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(b, c * s * s, h // s, w // s)


class Shortcut(nn.Module):
    """`[shortcut]`: `act(alpha * previous + beta * layers[from])`."""

    def __init__(self, source: int, activation: str, alpha: float, beta: float):
        super().__init__()
        self.source, self.activation, self.alpha, self.beta = source, activation, alpha, beta

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return activate(self.alpha * x + self.beta * outputs[self.source], self.activation)


class Region(nn.Module):
    """`[region]`: the detection head's settings; in the forward pass it passes the raw feature map F through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
