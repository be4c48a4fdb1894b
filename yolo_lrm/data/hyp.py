"""Augmentation hyper-parameters, apart from `augment.py` so that reading them needs no albumentations."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AugmentHyp:
    """Augmentation hyper-parameters, named as in Darknet cfgs (jitter from [region], the rest from [net])."""
    jitter: float = 0.2
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: bool = True

    @classmethod
    def from_dict(cls, hyp: dict[str, Any] | None) -> 'AugmentHyp':
        """Validate a `hyp` dict (unknown keys and out-of-range values are errors)."""
        hyp = dict(hyp or {})
        known = {f.name for f in fields(cls)}
        unknown = set(hyp) - known
        if unknown:
            raise ValueError(f'unknown augmentation keys {sorted(unknown)}; accepted: {sorted(known)}')
        out = cls(**hyp)
        if not 0 <= out.jitter < 1:
            raise ValueError(f'jitter must be in [0, 1), got {out.jitter}')
        if not 0 <= out.hue <= 0.5:
            raise ValueError(f'hue must be in [0, 0.5], got {out.hue}')
        if out.saturation <= 0 or out.exposure <= 0:
            raise ValueError(f'saturation and exposure must be positive, got {out.saturation}, {out.exposure}')
        return out


def hyp_from_cfg(cfg) -> dict[str, float]:
    """The augmentation keys of a parsed cfg: jitter from `[region]`, hue/saturation/exposure from `[net]`."""
    return {'jitter': cfg.region['jitter'], 'hue': cfg.net['hue'], 'saturation': cfg.net['saturation'],
            'exposure': cfg.net['exposure']}
