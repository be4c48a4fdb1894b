"""Static INT8 quantization of an fp32 ONNX export with ONNX Runtime, calibrated on real letterboxed images.

The calibration images are the `train=` list of a `.data` file, an evenly spaced sample of `count` of them, each
letterboxed exactly as at inference (`letterbox.letterbox`), so the activation ranges are those the model will see.
`QuantSettings` says how; `DEFAULT` is the setting chosen by measured mAP and speed (bench/README.md, "CPU engines").
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .cfg import CfgError
from .data import ImageError, read_image
from .data.datafile import DataCfg, parse_data
from .letterbox import letterbox
from .onnxrun import INPUT, OUTPUT, OnnxError, check_onnxruntime

DEFAULT_CALIB_IMAGES = 100
log = logging.getLogger('yolo_lrm.quantize')


@dataclass(frozen=True)
class QuantSettings:
    """How to quantize: `fmt` 'qdq' (QuantizeLinear/DequantizeLinear pairs around float ops, which ORT fuses into
    integer kernels) or 'qoperator' (QLinearConv etc. written out); per-channel or per-tensor weight scales;
    activations and weights 'int8' or 'uint8'; `float_head` keeps the last conv (the one that writes F) in float32."""
    fmt: str = 'qdq'
    per_channel: bool = True
    activations: str = 'uint8'
    # uint8 weights: the AVX2 u8 x s8 kernel (VPMADDUBSW) saturates its int16 sums, which cost 1.4 mAP on BCCD test,
    # while u8 x u8 takes another kernel at the same speed (bench/README.md, "CPU engines")
    weights: str = 'uint8'
    float_head: bool = True

    def label(self) -> str:
        """A short name for tables: `qdq/per-channel/u8s8/head fp32` (activations, then weights)."""
        short = {'uint8': 'u8', 'int8': 's8'}
        return '/'.join((self.fmt, 'per-channel' if self.per_channel else 'per-tensor',
                         short[self.activations] + short[self.weights], 'head fp32' if self.float_head else 'all int8'))


DEFAULT = QuantSettings()


class CalibrationImages:
    """ORT's calibration reader (`get_next() -> {input: batch} or None`) over letterboxed images, one per call."""

    def __init__(self, paths: Sequence[str], width: int, height: int):
        self.paths, self.width, self.height = list(paths), width, height
        self.used: list[str] = []
        self.skipped: list[str] = []
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next readable image as a (1, 3, H, W) float32 batch; None at the end."""
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                image = read_image(path)
            except ImageError as exc:
                self.skipped.append(str(exc))
                log.warning('calibration: skipped %s', exc)
                continue
            self.used.append(path)
            return {INPUT: letterbox(image, self.width, self.height)[None]}
        return None


def calibration_paths(data: str | os.PathLike | DataCfg, count: int = DEFAULT_CALIB_IMAGES) -> list[str]:
    """`count` images of the data's train= list, evenly spaced over it (all of them when it is shorter)."""
    cfg = data if isinstance(data, DataCfg) else parse_data(data)
    if count < 1:
        raise ValueError(f'--calib-images {count}: need at least one calibration image')
    if not cfg.has('train'):
        raise CfgError(f'{cfg.path}: no train= list: INT8 calibration needs real images of the training data')
    cfg.require('train')
    images = cfg.images('train')
    paths = images.paths()
    if not paths:
        raise ValueError(f'{images.source}: the image list is empty: INT8 calibration needs real images')
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def head_conv(model) -> str:
    """Name of the Conv node that writes the output F (the region head's linear 1x1 conv)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer.get(OUTPUT)
    if node is None or node.op_type != 'Conv':
        raise OnnxError(f'the output {OUTPUT!r} is not written by a Conv node ({node.op_type if node else "none"})')
    return node.name


def quantize_int8(fp32_path: str | os.PathLike, out: str | os.PathLike, paths: Sequence[str], width: int,
                  height: int, settings: QuantSettings = DEFAULT) -> CalibrationImages:
    """Write the INT8 model of an fp32 export to `out`, calibrated (min/max) on `paths`; returns the reader, which
    lists the images used and skipped.  Model-level metadata of the fp32 file is carried over unchanged."""
    check_onnxruntime()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    reader = CalibrationImages(paths, width, height)
    with tempfile.TemporaryDirectory(prefix='yolo_lrm_int8_') as tmp:
        prepared = Path(tmp) / 'prepared.onnx'
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference + graph optimisation, as ORT advises
        model = onnx.load(str(prepared))
        qtype = {'int8': QuantType.QInt8, 'uint8': QuantType.QUInt8}
        try:
            quantize_static(str(prepared), str(out), reader,
                            quant_format={'qdq': QuantFormat.QDQ, 'qoperator': QuantFormat.QOperator}[settings.fmt],
                            per_channel=settings.per_channel, activation_type=qtype[settings.activations],
                            weight_type=qtype[settings.weights],
                            nodes_to_exclude=[head_conv(model)] if settings.float_head else None,
                            calibrate_method=CalibrationMethod.MinMax)
            # min/max calibration keeps only each tensor's ReduceMin/ReduceMax per image, so memory stays small;
            # ORT's CalibMaxIntermediateOutputs must not be set: it drops each full chunk without using it (1.32)
        except Exception as exc:  # ORT's quantizer raises many types; with no image read, that is the cause
            if not reader.used:
                raise ValueError(f'none of the {len(paths)} calibration images could be read '
                                 f'({reader.skipped[0]})') from None
            raise OnnxError(f'{fp32_path}: INT8 quantization failed ({exc.__class__.__name__}: {exc})') from None
    if not reader.used:
        Path(out).unlink(missing_ok=True)
        raise ValueError(f'none of the {len(paths)} calibration images could be read ({reader.skipped[0]})')
    return reader


def settings_meta(settings: QuantSettings, reader: CalibrationImages, data: str) -> dict:
    """The quantization record written into an INT8 model's metadata."""
    return {**asdict(settings), 'calibration': {'data': Path(data).name, 'images': len(reader.used),
                                                'skipped': len(reader.skipped), 'method': 'minmax'}}
