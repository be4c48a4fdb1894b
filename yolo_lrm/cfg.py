"""Darknet `.cfg` parsing: Darknet's syntax, strict validation (`.data` files: `yolo_lrm/data/datafile.py`).

Syntax follows Darknet (`[section]`, `key=value`, `#`/`;` comments, all whitespace stripped, comma lists, the first
occurrence of a key wins).  Unlike Darknet, an unknown section or key, a malformed value or a missing required key is
an error naming the file, line and key.  `[net]` and `[lrm]` are settings sections: they are not layers, so layer
indices (for `route`, `shortcut` and `--set N.key=...`) count the other sections from 0, as Darknet does.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .textfile import read_text


class CfgError(ValueError):
    """A problem in a `.cfg` or data file, with its location in the message."""


def _int(v: str) -> int:
    return int(v)


def _float(v: str) -> float:
    return float(v)


def _ints(v: str) -> list[int]:
    return [_int(x) for x in v.split(',') if x != '']


def _floats(v: str) -> list[float]:
    return [float(x) for x in v.split(',') if x != '']


def _str(v: str) -> str:
    return v


def one_of(*allowed: str) -> Callable[[str], str]:
    """A value parser that accepts only the `allowed` words."""
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return v
    parse.__name__ = 'one of ' + '|'.join(allowed)
    return parse


REQUIRED = object()  # marks a key without default
# relu6 is ours (Darknet has none): MobileNet-v1's activation, for its ImageNet weights (yolo_lrm/backbones.py)
_ACTIVATIONS = one_of('leaky', 'linear', 'relu', 'relu6', 'logistic')

# Keys every Darknet layer accepts (per-layer lr multiplier and loading switches).
_COMMON = {
    'learning_rate': (_float, 1.0), 'stopbackward': (_int, 0), 'dontload': (_int, 0),
    'dontloadscales': (_int, 0), 'numload': (_int, 0), 'onlyforward': (_int, 0), 'dontsave': (_int, 0),
    'truth': (_int, 0), 'smooth': (_float, 0.0),
}

# section -> key -> (parser, default).  Keys Darknet knows but that do not change a YOLOv2 detector are accepted so
# that Darknet's own cfgs load; what we cannot honour (e.g. adam=1, reorg reverse) is rejected when the layer is built.
SCHEMA: dict[str, dict[str, tuple[Callable[[str], Any], Any]]] = {
    'net': {
        'batch': (_int, 1), 'subdivisions': (_int, 1), 'width': (_int, 416), 'height': (_int, 416),
        'channels': (_int, 3), 'momentum': (_float, 0.9), 'decay': (_float, 0.0001),
        'learning_rate': (_float, 0.001), 'burn_in': (_int, 0), 'power': (_float, 4.0),
        'max_batches': (_int, 0), 'policy': (one_of('constant', 'steps', 'step', 'exp', 'poly', 'sigmoid'), 'constant'),
        'steps': (_ints, []), 'scales': (_floats, []), 'step': (_int, 1), 'scale': (_float, 1.0),
        'gamma': (_float, 1.0), 'angle': (_float, 0.0), 'saturation': (_float, 1.0), 'exposure': (_float, 1.0),
        'hue': (_float, 0.0), 'aspect': (_float, 1.0), 'time_steps': (_int, 1), 'notruth': (_int, 0),
        'random': (_int, 0), 'adam': (_int, 0), 'B1': (_float, 0.9), 'B2': (_float, 0.999), 'eps': (_float, 1e-7),
        'inputs': (_int, 0), 'max_crop': (_int, 0), 'min_crop': (_int, 0), 'max_ratio': (_float, 0.0),
        'min_ratio': (_float, 0.0), 'center': (_int, 0), 'clip': (_float, 0.0),
    },
    'convolutional': {
        **_COMMON, 'filters': (_int, 1), 'size': (_int, 1), 'stride': (_int, 1), 'pad': (_int, 0),
        'padding': (_int, 0), 'groups': (_int, 1), 'activation': (_ACTIVATIONS, 'logistic'),
        'batch_normalize': (_int, 0), 'binary': (_int, 0), 'xnor': (_int, 0), 'flipped': (_int, 0), 'dot': (_float, 0.0),
    },
    'maxpool': {**_COMMON, 'stride': (_int, 1), 'size': (_int, None), 'padding': (_int, None)},
    'avgpool': {**_COMMON},
    'route': {**_COMMON, 'layers': (_ints, REQUIRED)},
    'reorg': {**_COMMON, 'stride': (_int, 1), 'reverse': (_int, 0), 'flatten': (_int, 0), 'extra': (_int, 0)},
    'shortcut': {**_COMMON, 'from': (_int, REQUIRED), 'activation': (_ACTIVATIONS, 'linear'),
                 'alpha': (_float, 1.0), 'beta': (_float, 1.0)},
    'region': {
        **_COMMON, 'anchors': (_floats, []), 'classes': (_int, 20), 'num': (_int, 1), 'coords': (_int, 4),
        'softmax': (_int, 0), 'jitter': (_float, 0.2), 'thresh': (_float, 0.5), 'rescore': (_int, 0),
        'bias_match': (_int, 0), 'max': (_int, 30), 'random': (_int, 0), 'coord_scale': (_float, 1.0),
        'object_scale': (_float, 1.0), 'noobject_scale': (_float, 1.0), 'class_scale': (_float, 1.0),
        'mask_scale': (_float, 1.0), 'absolute': (_int, 0), 'background': (_int, 0), 'log': (_int, 0),
        'sqrt': (_int, 0), 'classfix': (_int, 0), 'tree': (_str, ''), 'map': (_str, ''),
        # ours: the paper's Loss1 and focal loss (Table IV)
        'loss': (one_of('loss2', 'loss1'), 'loss2'), 'focal': (_int, 0), 'focal_gamma': (_float, 2.0),
        'focal_alpha': (_float, 0.25),
        # ours: IoU-balanced losses (Wu et al., IoU-balanced loss functions, eq. 1-4), off by default
        'iou_balanced_cls': (_int, 0), 'eta': (_float, 1.5), 'iou_balanced_loc': (_int, 0), 'lambda': (_float, 1.5),
        'w_loc': (_float, 1.0),
    },
    'lrm': {
        # ours: Loss Rank Mining (training only).  hard_examples=0 switches it off; nms>=1 means no NMS.
        'hard_examples': (_int, 0), 'nms': (_float, 1.0),
        # ours: the other mining options (yolo_lrm/loss/mining.py); the defaults are plain LRM
        'mode': (one_of('lrm', 'ohem'), 'lrm'), 'neg_pos_ratio': (_float, 3.0),
        'select': (one_of('loss', 'stratified', 'strata'), 'loss'), 'select_beta': (_float, 2.0),
        'beta_start': (_int, 0), 'beta_ramp': (_int, 0), 'strata_cls_share': (_float, 0.5),
        'k_mode': (one_of('fixed', 'truths', 'loss_share'), 'fixed'), 'k_min': (_int, 0),
        'k_per_truth': (_float, 1.0), 'loss_share': (_float, 0.9), 'soft': (_float, 0.0), 'soft_decay': (_float, 0.0),
        # ours: measure what LRM keeps and drops without changing the loss (yolo_lrm/loss/mining.py, `probe`)
        'probe': (_int, 0), 'probe_k': (_int, 256), 'probe_nms': (_float, 0.7),
    },
}
ALIASES = {'network': 'net', 'conv': 'convolutional', 'max': 'maxpool', 'avg': 'avgpool'}
SETTINGS_SECTIONS = ('net', 'lrm')


@dataclass
class Section:
    """One `[section]` of a cfg: its canonical type, typed options (defaults filled) and where it came from."""
    type: str
    options: dict[str, Any]
    path: str = '<memory>'
    line: int = 0
    given: dict[str, int] = field(default_factory=dict)  # keys written in the file -> line number
    set_by: dict[str, str] = field(default_factory=dict)  # keys an override set -> the override (`net.width=100`)

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def where(self, key: str | None = None) -> str:
        """`file:line` of the key (or of the section header), or the `--set` override that set it, for error
        messages."""
        if key in self.set_by:
            return f'{self.path}: --set {self.set_by[key]}'
        line = self.given.get(key, self.line) if key else self.line
        return f'{self.path}:{line}'

    def error(self, message: str, key: str | None = None) -> CfgError:
        """A CfgError located at this section (or one of its keys)."""
        what = f'[{self.type}]' + (f' key {key!r}' if key else '')
        return CfgError(f'{self.where(key)}: {what}: {message}')


@dataclass
class Cfg:
    """A parsed cfg: the `[net]` settings, the layer sections in order, and the `[lrm]` settings."""
    net: Section
    layers: list[Section]
    lrm: Section
    path: str = '<memory>'

    @property
    def region(self) -> Section:
        """The `[region]` section (the detection head)."""
        regions = [s for s in self.layers if s.type == 'region']
        if not regions:
            raise CfgError(f'{self.path}: no [region] section: not a YOLOv2 detector cfg')
        return regions[-1]

    def classes_overrides(self, classes: int) -> list[str]:
        """The `--set` overrides that make this detector predict `classes` classes: `region.classes=C` and, when a
        convolution feeds [region], its `filters=num*(5+C)` addressed by layer index."""
        region = self.region
        index = next(i for i, sec in enumerate(self.layers) if sec is region)
        overrides = [f'region.classes={classes}']
        if index and self.layers[index - 1].type == 'convolutional':
            overrides.append(f'{index - 1}.filters={region["num"] * (5 + classes)}')
        return overrides

    def to_text(self) -> str:
        """The cfg as Darknet text (resolved values, keys in schema order); `parse_cfg_text` reads it back."""
        out = []
        for sec in [self.net, *self.layers, self.lrm]:
            out.append(f'[{sec.type}]')
            for key, (parser, default) in SCHEMA[sec.type].items():
                value = sec.options.get(key)
                if key not in sec.given and (value == default or value is None):
                    continue
                out.append(f'{key}={_format(value)}')
            out.append('')
        return '\n'.join(out)


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ','.join(_format(v) for v in value)
    return str(value)


def _raw_sections(text: str, path: str) -> list[tuple[str, int, list[tuple[str, str, int]]]]:
    sections: list[tuple[str, int, list[tuple[str, str, int]]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = ''.join(raw.split())  # Darknet strips every space, tab and newline
        if not line or line[0] in '#;':
            continue
        if line[0] == '[':
            if not line.endswith(']'):
                raise CfgError(f'{path}:{lineno}: malformed section header {raw.strip()!r}')
            sections.append((line[1:-1], lineno, []))
            continue
        if not sections:
            raise CfgError(f'{path}:{lineno}: {raw.strip()!r} appears before any [section]')
        if '=' not in line:
            raise CfgError(f'{path}:{lineno}: expected key=value, got {raw.strip()!r}')
        key, value = line.split('=', 1)
        sections[-1][2].append((key, value, lineno))
    return sections


def _did_you_mean(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def _typed_section(name: str, header_line: int, items: list[tuple[str, str, int]], path: str) -> Section:
    stype = ALIASES.get(name, name)
    if stype not in SCHEMA:
        known = ', '.join(sorted(SCHEMA))
        raise CfgError(f'{path}:{header_line}: unknown section [{name}]{_did_you_mean(name, SCHEMA)}; '
                       f'accepted sections: {known}')
    schema = SCHEMA[stype]
    options: dict[str, Any] = {}
    given: dict[str, int] = {}
    for key, value, lineno in items:
        if key not in schema:
            raise CfgError(f'{path}:{lineno}: [{stype}] unknown key {key!r}{_did_you_mean(key, schema)}; '
                           f'accepted keys: {", ".join(schema)}')
        if key in given:  # Darknet: the first occurrence wins; we keep that rule
            continue
        parser = schema[key][0]
        if value == '':
            raise CfgError(f'{path}:{lineno}: [{stype}] key {key!r} has no value')
        try:
            options[key] = parser(value)
        except ValueError as exc:
            kind = getattr(parser, '__name__', 'value').lstrip('_')
            raise CfgError(f'{path}:{lineno}: [{stype}] key {key!r}: cannot parse {value!r} as {kind} ({exc})') from None
        given[key] = lineno
    for key, (parser, default) in schema.items():
        if key in options:
            continue
        if default is REQUIRED:
            raise CfgError(f'{path}:{header_line}: [{stype}] missing required key {key!r}')
        options[key] = list(default) if isinstance(default, list) else default
    return Section(stype, options, path, header_line, given)


def parse_cfg_text(text: str, path: str = '<memory>') -> Cfg:
    """Parse cfg text; see the module docstring for the rules."""
    net = lrm = None
    layers: list[Section] = []
    for name, line, items in _raw_sections(text, path):
        sec = _typed_section(name, line, items, path)
        if sec.type in SETTINGS_SECTIONS:
            if (net if sec.type == 'net' else lrm) is not None:
                raise CfgError(f'{path}:{line}: a second [{sec.type}] section')
            if sec.type == 'net':
                if layers:
                    raise CfgError(f'{path}:{line}: [net] must come before the layers')
                net = sec
            else:
                lrm = sec
        else:
            layers.append(sec)
    if net is None:
        raise CfgError(f'{path}: no [net] section (the first section of a Darknet cfg)')
    if lrm is None:
        lrm = _typed_section('lrm', 0, [], path)
    return Cfg(net, layers, lrm, path)


def parse_cfg(path: str | os.PathLike, overrides: list[str] | None = None) -> Cfg:
    """Read a `.cfg` file and apply `section.key=value` overrides (see `apply_overrides`)."""
    path = str(path)
    text = read_text(path, 'cfg file', CfgError)
    cfg = parse_cfg_text(text, path)
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def check_region(region: Section) -> None:
    """Reject a `[region]` the head cannot read (coords, anchors per num, softmax), naming the file and key; the
    model and the loss both call it."""
    r = region
    if r['coords'] != 4:
        raise r.error('only coords=4 is supported', 'coords')
    if len(r['anchors']) != 2 * r['num']:
        raise r.error(f'num={r["num"]} needs {2 * r["num"]} anchor values, got {len(r["anchors"])}', 'anchors')
    if not r['softmax']:
        raise r.error('only softmax=1 (softmax classes, as in all YOLOv2 cfgs) is supported', 'softmax')


def apply_overrides(cfg: Cfg, overrides: list[str]) -> None:
    """Apply `--set` overrides in place: `net.batch=64`, `region.loss=loss1`, `lrm.nms=0.7`, `14.filters=30`.

    A section name must be unique in the cfg (`net`, `region`, `lrm`); other layers are addressed by index.
    """
    for item in overrides:
        target, sep, value = item.partition('=')
        sect_name, dot, key = target.rpartition('.')
        if not sep or not dot or not key:
            raise CfgError(f'override {item!r}: expected section.key=value (e.g. lrm.hard_examples=128)')
        sec = _override_section(cfg, sect_name, item)
        schema = SCHEMA[sec.type]
        if key not in schema:
            raise CfgError(f'override {item!r}: [{sec.type}] has no key {key!r}; accepted keys: {", ".join(schema)}')
        try:
            sec.options[key] = schema[key][0](''.join(value.split()))
        except ValueError as exc:
            raise CfgError(f'override {item!r}: cannot parse {value!r} ({exc})') from None
        sec.given[key] = 0  # written by to_text even when it equals the default
        sec.set_by[key] = item

def _override_section(cfg: Cfg, name: str, item: str) -> Section:
    if name.lstrip('-').isdigit():
        idx = int(name)
        if not 0 <= idx < len(cfg.layers):
            raise CfgError(f'override {item!r}: no layer {idx} (the cfg has {len(cfg.layers)} layers)')
        return cfg.layers[idx]
    name = ALIASES.get(name, name)
    if name == 'net':
        return cfg.net
    if name == 'lrm':
        return cfg.lrm
    matches = [s for s in cfg.layers if s.type == name]
    if len(matches) != 1:
        where = 'no' if not matches else f'{len(matches)}'
        raise CfgError(f'override {item!r}: {where} [{name}] sections; address a layer by index, e.g. 14.filters=...')
    return matches[0]
