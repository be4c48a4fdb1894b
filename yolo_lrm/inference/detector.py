"""The detector: a trained network ready for inference, run through the one pipeline (`yolo_lrm/pipeline.py`):
letterbox → network → decode + NMS → unletterbox, exactly what evaluation scores.

The network is PyTorch's or an ONNX export run by ONNX Runtime (`engines.load_network`); the pipeline around it is
the same.  Speed on PyTorch comes from conv+BN fusion, channels_last and autocast on CUDA.
"""
from __future__ import annotations

import numpy as np
import torch

from ..allocator import keep_freed_memory
from ..letterbox import letterbox
from ..model import Darknet
from ..onnxrun import OnnxNetwork
from ..pipeline import Postprocess

DEFAULT_CONF = 0.25  # Darknet: `detector test` .5, `demo` .24; .25 keeps demo's recall with a round number


class Detector:
    """A network ready for inference: eval mode, BN fused, optionally channels_last and autocast (CUDA); an
    `OnnxNetwork` is taken as it is (the export is already fused, and ONNX Runtime picks its own layout).

    `detector([rgb images])` returns per image an (n, 6) tensor `x1, y1, x2, y2, score, class` in pixels of that
    image (unclipped, as evaluation scores them); the steps are also exposed for timing: `prepare`, `network`,
    `postprocess`.
    """

    def __init__(self, net: Darknet | OnnxNetwork, size: tuple[int, int] | None = None, conf: float = DEFAULT_CONF,
                 nms: float = 0.45, max_det: int = 300, classes: list[int] | None = None, half: str | None = None,
                 fuse: bool = True, channels_last: bool = True):
        self.net = net.eval()
        self.device = next(net.parameters()).device
        if self.device.type == 'cpu':
            keep_freed_memory()
        is_torch = isinstance(net, torch.nn.Module)
        if fuse and is_torch:
            net.fuse()
        # channels_last: cuDNN's preferred layout; on CPU (oneDNN) it cut CPU time by 0-20% on the cfgs measured,
        # most on tiny-yolo, whose NCHW max-pools are slow (bench/bench_infer.py)
        self.channels_last = channels_last and is_torch
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.size = size or (net.width, net.height)
        net.check_input_size(*self.size)
        if half not in (None, 'fp16', 'bf16'):
            raise ValueError(f'half must be fp16 or bf16, got {half!r}')
        # autocast is for CUDA only: on CPU half precision is slower than fp32 on most processors
        self.dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(half) if self.device.type == 'cuda' else None
        if classes is not None and any(not 0 <= c < net.num_classes for c in classes):
            raise ValueError(f'classes {classes} outside 0..{net.num_classes - 1}')
        self.decoder = Postprocess.for_network(net, self.size, conf, nms, max_det, classes, self.device)

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        """Darknet's letterbox of an (H, W, 3) RGB image to the network size: (3, h, w) float32."""
        return letterbox(image_rgb, *self.size)

    @torch.inference_mode()
    def network(self, batch: np.ndarray) -> torch.Tensor:
        """Raw output F (float32) for a (B, 3, h, w) float32 batch of letterboxed images."""
        x = torch.from_numpy(batch)
        if self.device.type == 'cuda':
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(x)
        return out.float()

    @torch.inference_mode()
    def postprocess(self, output: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Decode + class-wise NMS, then map the boxes to each image's pixels (`sizes` = (w, h) per image)."""
        return self.decoder(output, sizes)

    def __call__(self, images_rgb: list[np.ndarray]) -> list[torch.Tensor]:
        """Detections for a list of (H, W, 3) RGB uint8 images, run as one batch."""
        batch = np.stack([self.prepare(im) for im in images_rgb])
        return self.postprocess(self.network(batch), [(im.shape[1], im.shape[0]) for im in images_rgb])

    def warmup(self, batch: int = 1) -> None:
        """One forward pass on a blank batch (first-call allocation, cuDNN autotuning) before timing starts."""
        self.network(np.full((batch, 3, self.size[1], self.size[0]), 0.5, dtype=np.float32))
        synchronize(self.device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are real."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


