"""CPU inference engines side by side: PyTorch (detect.py --engine torch), ONNX Runtime fp32 (its auto on a CPU)
and INT8, OpenCV 4.x DNN on the same cfg + .weights, OpenVINO fp32 and INT8, for tiny, yolov2-voc and MobileNet at
416; batch 1 and 8; network only and end to end; medians of interleaved rounds (every engine once per round, the
order rotating) and the speed-up over PyTorch measured in the same run.

    python bench/bench_engines.py [--cfgs ...] [--batches 1 8] [--rounds 7] [--threads 2] [--engines ...]
        [--calib DATA] [--calib-images N] [--opencv-python PATH] [--memory] [--work DIR] [--json OUT]
    python bench/bench_engines.py --weights W.pt --data DATA [--test-data DATA2 ...] [--int8-variants]

Rows (random weights, seed 0: speed does not depend on them):
  pytorch        yolo_lrm.inference.detector.Detector: BN fused, channels_last (detect.py's PyTorch route)
  ort, ort-int8  the export (`python -m yolo_lrm.export`) run by onnxrun.OnnxNetwork inside the same Detector, so the
                 end-to-end steps (letterbox, decode, NMS, unletterbox) are detect.py's own; INT8 = quantize.DEFAULT
                 calibrated on --calib's train= images
  openvino[-int8] the same two ONNX files compiled by OpenVINO (`OnnxNetwork(runtime=open_openvino)`), if installed
  opencv         cv2.dnn.readNetFromDarknet on the cfg and a Darknet .weights of the same network, in a worker
                 process of an OpenCV 4.x interpreter (`--opencv-python`; OpenCV 5 has no Darknet importer),
                 bench/opencv_dnn.py: network only = forward on a prepared blob; end to end = an OpenCV user's
                 pipeline (cv2.resize letterbox, blobFromImages, forward with the region layer's own decoding,
                 NMSBoxesBatched).  A cfg it cannot read (relu6) gets the reason instead of figures.
e2e = 768x576 frames (random content) -> detections in their pixels, without file I/O, conf .25.
`--memory`: each engine alone in a fresh process (OpenCV: its worker), batch max(--batches) end to end: peak RSS
and the part above the process before the engine was built.

With `--weights` (a .pt) and `--data`: VOC07 mAP@.5 on the data's valid= (and each --test-data's) of the PyTorch
network, ORT fp32 and INT8 (quantize.DEFAULT, or every setting of INT8_VARIANTS with --int8-variants, each with its
batch-1 network time), all through yolo_lrm.evaluation.evaluate.evaluate_model.
"""
from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as detect.py; ORT follows it (onnxrun.session_options)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from yolo_lrm.checkpoint import load_model  # noqa: E402
from yolo_lrm.inference.detector import Detector  # noqa: E402
from yolo_lrm.export import export_onnx, metadata, save_onnx  # noqa: E402
from yolo_lrm.model import Darknet  # noqa: E402
from yolo_lrm.onnxrun import INPUT, META_KEY, OUTPUT, OnnxError, OnnxNetwork, Runner, check_signature  # noqa: E402
from yolo_lrm.quantize import DEFAULT, QuantSettings, calibration_paths, quantize_int8  # noqa: E402
from yolo_lrm.weights import save_darknet_weights  # noqa: E402

CFGS = ['cfg/yolov2-tiny-voc.cfg', 'cfg/yolov2-voc.cfg', 'cfg/yolov2-mobilenet-voc.cfg']
ENGINES = ['pytorch', 'ort', 'ort-int8', 'opencv', 'openvino', 'openvino-int8']
SIZE = 416
# the INT8 settings compared by --int8-variants (quantize.DEFAULT is the one chosen from them)
INT8_VARIANTS = [DEFAULT, *(replace(DEFAULT, **change) for change in (
    {'weights': 'int8'}, {'activations': 'int8', 'weights': 'int8'}, {'per_channel': False}, {'float_head': False},
    {'fmt': 'qoperator'}))]


def machine(threads: int) -> str:
    """CPU model, cores, the SIMD extensions that decide INT8 speed, load, library versions."""
    info = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    lines = info.splitlines()
    name = next((ln.split(':', 1)[1].strip() for ln in lines if ln.startswith('model name')), platform.machine())
    flags = set(next((ln.split(':', 1)[1].split() for ln in lines if ln.startswith('flags')), []))
    isa = [f for f in ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if f in flags]
    versions = [f'torch {torch.__version__}']
    for module in ('onnxruntime', 'openvino'):
        if importlib.util.find_spec(module):
            versions.append(f'{module} {__import__(module).__version__}')
    return (f'{name}, {os.cpu_count()} cores, {" ".join(isa) or "no AVX2"} (no AVX-512/VNNI unless listed), '
            f'load {" ".join(f"{v:.1f}" for v in os.getloadavg())}; {", ".join(versions)}; {threads} threads, '
            f'OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}')


def frames(batch: int) -> list[np.ndarray]:
    """Camera-sized frames (768x576), random content, seed 0 (bench/opencv_dnn.py makes the same)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (576, 768, 3), dtype=np.uint8) for _ in range(batch)]


# ------------------------------------------------------------------------------------------------ the artifacts
@dataclass
class Artifacts:
    """What one cfg's engines load: the network's .weights (OpenCV), the fp32 and INT8 exports."""
    cfg: str
    weights: Path
    fp32: Path
    int8: Path | None
    int8_reason: str = ''


def random_net(cfg: str) -> Darknet:
    """The cfg at 416 with seed-0 random weights."""
    torch.manual_seed(0)
    return Darknet(str(ROOT / cfg), [f'net.width={SIZE}', f'net.height={SIZE}']).eval()


def prepare(cfg: str, work: Path, calib: list[str]) -> Artifacts:
    """Export the cfg's network (once: files in `work` are reused) as .weights, fp32 ONNX and INT8 ONNX."""
    stem = Path(cfg).stem
    weights, fp32, int8 = work / f'{stem}.weights', work / f'{stem}.onnx', work / f'{stem}.int8.onnx'
    if not (weights.exists() and fp32.exists()):
        net = random_net(cfg)
        save_darknet_weights(net, weights)
        export_onnx(net, (SIZE, SIZE), fp32, metadata(net, None, (SIZE, SIZE)))
    if not int8.exists():
        if not calib:
            return Artifacts(cfg, weights, fp32, None, 'no --calib data with train= images to calibrate INT8')
        quantize_to(fp32, int8, calib, DEFAULT)
    return Artifacts(cfg, weights, fp32, int8)


def quantize_to(fp32: Path, out: Path, calib: list[str], settings: QuantSettings) -> None:
    """quantize.quantize_int8 at the export's input size, with the fp32 metadata kept and marked INT8."""
    import onnx
    net = OnnxNetwork(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        quantize_int8(fp32, Path(tmp) / 'q.onnx', calib, net.width, net.height, settings)
        save_onnx(onnx.load(str(Path(tmp) / 'q.onnx')), out, {**net.meta, 'precision': 'int8'})


# ------------------------------------------------------------------------------------------------- the engines
def open_openvino(path: str, threads: int | None) -> tuple[Runner, dict[str, str]]:
    """onnxrun.OnnxNetwork's `runtime`: the model compiled by OpenVINO for the CPU, latency-oriented."""
    import openvino as ov
    core = ov.Core()
    try:
        model = core.read_model(path)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the reader's message
        raise OnnxError(f'{path}: OpenVINO cannot read it ({exc.__class__.__name__}: {exc})') from None
    check_signature(path, [i.get_any_name() for i in model.inputs], [o.get_any_name() for o in model.outputs])
    props = {META_KEY: model.get_rt_info(['framework', META_KEY]).astype(str)} \
        if model.has_rt_info(['framework', META_KEY]) else {}
    config = {'PERFORMANCE_HINT': 'LATENCY', **({'INFERENCE_NUM_THREADS': threads} if threads else {})}
    try:
        compiled = core.compile_model(model, 'CPU', config)
    except RuntimeError as exc:
        raise OnnxError(f'{path}: OpenVINO cannot compile it ({" ".join(str(exc).split())[-200:]})') from None
    request = compiled.create_infer_request()
    return (lambda batch: request.infer({INPUT: batch})[compiled.output(OUTPUT)]), props


@dataclass
class Engine:
    """One row's two timed calls for a batch size: network only and end to end (seconds for the whole batch)."""
    name: str
    net: Callable[[int], float]
    e2e: Callable[[int], float]
    close: Callable[[], None] = lambda: None
    memory: Callable[[], dict] | None = None  # peak memory of a worker process (OpenCV)


def detector_engine(name: str, det: Detector) -> Engine:
    """Time a Detector (PyTorch or an exported model inside it): network on a letterboxed batch, and the whole call."""
    cache: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

    def inputs(b: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if b not in cache:
            ims = frames(b)
            cache[b] = np.stack([det.prepare(im) for im in ims]), ims
        return cache[b]

    def net(b: int) -> float:
        x = inputs(b)[0]
        t = time.perf_counter()
        det.network(x)
        return time.perf_counter() - t

    def e2e(b: int) -> float:
        ims = inputs(b)[1]
        t = time.perf_counter()
        det(ims)
        return time.perf_counter() - t
    return Engine(name, net, e2e)


class OpenCVWorker:
    """bench/opencv_dnn.py in an OpenCV 4.x interpreter, spoken to line by line."""

    def __init__(self, python: str, art: Artifacts, threads: int):
        self.proc = subprocess.Popen([python, str(ROOT / 'bench' / 'opencv_dnn.py'), str(ROOT / art.cfg),
                                      str(art.weights), '--size', str(SIZE), '--threads', str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self.ask(None)

    def ask(self, cmd: dict | None) -> dict:
        """Send one command (None: only read) and return the answer."""
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + '\n')
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f'the OpenCV worker ended (exit {self.proc.wait()})')
        return json.loads(line)

    def close(self) -> None:
        """End the worker."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def build_engine(name: str, art: Artifacts, threads: int, opencv_python: str | None) -> Engine | str:
    """The named engine for a cfg, or the reason it has no figures here."""
    try:
        return make_engine(name, art, threads, opencv_python)
    except OnnxError as exc:
        return str(exc)


def make_engine(name: str, art: Artifacts, threads: int, opencv_python: str | None) -> Engine | str:
    """build_engine without the catch."""
    if name == 'pytorch':
        return detector_engine(name, Detector(random_net(art.cfg), (SIZE, SIZE), conf=0.25))
    if name.endswith('int8') and art.int8 is None:
        return art.int8_reason
    path = art.int8 if name.endswith('int8') else art.fp32
    if name.startswith('ort'):
        return detector_engine(name, Detector(OnnxNetwork(path, threads), conf=0.25, fuse=False, channels_last=False))
    if name.startswith('openvino'):
        if importlib.util.find_spec('openvino') is None:
            return 'openvino not installed (pip install openvino)'
        net = OnnxNetwork(path, threads, runtime=open_openvino)
        return detector_engine(name, Detector(net, conf=0.25, fuse=False, channels_last=False))
    if name == 'opencv':
        if not opencv_python:
            return 'no --opencv-python given (an interpreter with OpenCV 4.x: OpenCV 5 has no Darknet importer)'
        worker = OpenCVWorker(opencv_python, art, threads)
        if not worker.hello.get('ok'):
            worker.close()
            return worker.hello['reason']
        return Engine(f'opencv {worker.hello["version"]}', lambda b: worker.ask({'op': 'net', 'batch': b})['s'],
                      lambda b: worker.ask({'op': 'e2e', 'batch': b})['s'], worker.close,
                      lambda: worker.ask({'op': 'rss'}))
    raise ValueError(f'unknown engine {name!r}')


# ----------------------------------------------------------------------------------------------------- timing
@dataclass
class Row:
    """Medians per image (ms) of one engine at one cfg and batch."""
    cfg: str
    batch: int
    engine: str
    net_ms: float | None = None
    e2e_ms: float | None = None
    reason: str = ''
    net_runs: list[float] = field(default_factory=list)
    e2e_runs: list[float] = field(default_factory=list)


def time_interleaved(engines: dict[str, Engine], batch: int, rounds: int) -> dict[str, tuple[list, list]]:
    """Every engine once per round (network, then end to end), the order rotating each round; one warm-up call."""
    names = list(engines)
    runs: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for name in names:
        engines[name].net(batch)
        engines[name].e2e(batch)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name][0].append(engines[name].net(batch) / batch * 1e3)
            runs[name][1].append(engines[name].e2e(batch) / batch * 1e3)
    return runs


def speed_table(args: argparse.Namespace, work: Path, calib: list[str]) -> list[Row]:
    """Every cfg x batch x engine, printed as it comes."""
    rows: list[Row] = []
    print(f'{"cfg":<22}{"batch":>6} {"engine":<14}{"net ms":>9}{"e2e ms":>9}{"net x":>8}{"e2e x":>8}   '
          f'(ms per image, medians of {args.rounds} interleaved rounds; x = PyTorch time / this engine\'s)')
    for cfg in args.cfgs:
        art = prepare(cfg, work, calib)
        built = {name: build_engine(name, art, args.threads, args.opencv_python) for name in args.engines}
        engines = {n: e for n, e in built.items() if isinstance(e, Engine)}
        try:
            for batch in args.batches:
                runs = time_interleaved(engines, batch, args.rounds)
                for name in args.engines:
                    row = Row(Path(cfg).stem, batch, name, reason=built[name] if isinstance(built[name], str) else '')
                    if name in runs:
                        row.net_runs, row.e2e_runs = runs[name]
                        row.net_ms, row.e2e_ms = statistics.median(runs[name][0]), statistics.median(runs[name][1])
                    rows.append(row)
                print_rows([r for r in rows if r.cfg == Path(cfg).stem and r.batch == batch])
        finally:
            for e in engines.values():
                e.close()
    return rows


def print_rows(rows: list[Row]) -> None:
    """One cfg and batch: a line per engine with its speed-ups over the PyTorch row."""
    base = next((r for r in rows if r.engine == 'pytorch' and r.net_ms), None)
    for r in rows:
        if r.net_ms is None:
            print(f'{r.cfg:<22}{r.batch:>6} {r.engine:<14}  -- {r.reason}')
            continue
        ratio = (f'{base.net_ms / r.net_ms:>8.2f}{base.e2e_ms / r.e2e_ms:>8.2f}' if base else f'{"":>16}')
        print(f'{r.cfg:<22}{r.batch:>6} {r.engine:<14}{r.net_ms:>9.1f}{r.e2e_ms:>9.1f}{ratio}', flush=True)


# ----------------------------------------------------------------------------------------------------- memory
def probe(engine: str, cfg: str, batch: int, work: Path, threads: int) -> None:
    """(In a fresh process) build one engine from the prepared files, run it end to end, print its memory."""
    torch.set_num_threads(threads)
    art = prepare(cfg, work, [])
    Path('/proc/self/clear_refs').write_text('5')  # reset the peak (VmHWM) to what the process holds now
    before = status_mb('VmRSS')
    eng = build_engine(engine, art, threads, None)
    if isinstance(eng, str):
        raise SystemExit(eng)
    for _ in range(3):
        eng.e2e(batch)
    print(json.dumps({'before_mb': before, 'peak_mb': status_mb('VmHWM')}))


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak), in MB."""
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ':')) / 1024


def memory_table(args: argparse.Namespace, work: Path, calib: list[str]) -> list[dict]:
    """Peak RSS of each engine alone in a process (OpenCV: its worker), end to end at the largest batch."""
    batch = max(args.batches)
    out = []
    print(f'\npeak memory, end to end at batch {batch}, each engine alone in a fresh process (MB): '
          f'peak RSS / above the process before the engine')
    for cfg in args.cfgs:
        art = prepare(cfg, work, calib)
        for name in args.engines:
            if name == 'opencv':
                eng = build_engine(name, art, args.threads, args.opencv_python)
                if isinstance(eng, Engine):
                    eng.e2e(batch)
                    record(out, cfg, name, batch, eng.memory())
                    eng.close()
                continue
            if name.endswith('int8') and art.int8 is None or \
                    name.startswith('openvino') and importlib.util.find_spec('openvino') is None:
                continue
            proc = subprocess.run([sys.executable, __file__, '--probe', name, '--cfgs', cfg, '--batches',
                                   str(batch), '--work', str(work), '--threads', str(args.threads)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f'{Path(cfg).stem:<22} {name:<14} probe failed: {proc.stderr.strip()[-300:]}')
                continue
            record(out, cfg, name, batch, json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def record(out: list[dict], cfg: str, engine: str, batch: int, mem: dict) -> None:
    """Keep and print one memory row."""
    out.append({'cfg': Path(cfg).stem, 'engine': engine, 'batch': batch, **mem})
    print(f'{Path(cfg).stem:<22} {engine:<14}{mem["peak_mb"]:>9.0f}{mem["peak_mb"] - mem["before_mb"]:>9.0f}',
          flush=True)


# ------------------------------------------------------------------------------------------- mAP: fp32 vs INT8
def accuracy_table(args: argparse.Namespace, work: Path, calib: list[str]) -> list[dict]:
    """VOC07 mAP@.5 of the trained network in PyTorch, ORT fp32 and each INT8 setting, on --data's valid= and each
    --test-data's; then each model's batch-1 network time, interleaved (and each INT8 setting's on --cfgs)."""
    from yolo_lrm.evaluation.evaluate import evaluate_model
    net, names = load_model(args.weights)
    size = (net.width, net.height)
    stem = Path(args.weights).stem
    fp32 = work / f'{stem}.trained.onnx'
    export_onnx(net, size, fp32, metadata(net, names, size))
    variants = INT8_VARIANTS if args.int8_variants else [DEFAULT]
    models: dict[str, object] = {'pytorch': net, 'ort fp32': OnnxNetwork(fp32, args.threads)}
    for k, v in enumerate(variants):
        quantize_to(fp32, work / f'{stem}.trained.int8-{k}.onnx', calib, v)
        models[f'int8 {v.label()}'] = OnnxNetwork(work / f'{stem}.trained.int8-{k}.onnx', args.threads)
    datas = [args.data, *args.test_data]
    print(f'\nVOC07 mAP@.5 of {args.weights} ({size[0]}x{size[1]}); INT8 calibrated on {len(calib)} images of '
          f'{args.calib or args.data} train=; batch-1 network ms (median of {args.rounds} interleaved rounds)')
    print(f'{"model":<40}' + ''.join(f'{Path(d).stem:>14}' for d in datas) + f'{"net ms":>9}')
    out = []
    for name, model in models.items():
        maps = [100 * evaluate_model(model, d, progress=False).map for d in datas]
        out.append({'model': name, 'map': dict(zip(datas, maps))})
    engines = {name: detector_engine(name, Detector(m, conf=0.25, fuse=name == 'pytorch',
                                                    channels_last=name == 'pytorch'))
               for name, m in models.items()}
    runs = time_interleaved(engines, 1, args.rounds)
    for row in out:
        row['net_ms'] = statistics.median(runs[row['model']][0])
        print(f'{row["model"]:<40}' + ''.join(f'{v:>14.2f}' for v in row['map'].values()) + f'{row["net_ms"]:>9.1f}')
    if args.int8_variants:
        out += variant_speeds(args, work, calib, variants)
    return out


def variant_speeds(args: argparse.Namespace, work: Path, calib: list[str], variants: list[QuantSettings]
                   ) -> list[dict]:
    """Network-only ms of each INT8 setting (and fp32 ORT, PyTorch) on each --cfgs network, interleaved.  Random
    weights, calibrated on 8 of the images (the ranges do not change the speed, and a yolov2-voc calibration pass
    costs about a second per image here)."""
    out, calib = [], calib[:8]
    for cfg in args.cfgs:
        art = prepare(cfg, work, calib)
        engines = {'pytorch': build_engine('pytorch', art, args.threads, None),
                   'ort fp32': build_engine('ort', art, args.threads, None)}
        for k, v in enumerate(variants):
            path = work / f'{Path(cfg).stem}.int8-{k}.onnx'
            if not path.exists():
                quantize_to(art.fp32, path, calib, v)
            engines[f'int8 {v.label()}'] = detector_engine(v.label(), Detector(
                OnnxNetwork(path, args.threads), conf=0.25, fuse=False, channels_last=False))
        for batch in args.batches:
            runs = time_interleaved(engines, batch, args.rounds)
            base = statistics.median(runs['pytorch'][0])
            for name, (net_runs, _) in runs.items():
                ms = statistics.median(net_runs)
                out.append({'cfg': Path(cfg).stem, 'batch': batch, 'model': name, 'net_ms': ms})
                print(f'{Path(cfg).stem:<22}{batch:>6} {name:<40}{ms:>9.1f} ms{base / ms:>7.2f}x', flush=True)
    return out


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cfgs', nargs='+', default=CFGS)
    ap.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--engines', nargs='+', default=ENGINES, choices=ENGINES)
    ap.add_argument('--calib', metavar='DATA', help='.data whose train= images calibrate INT8 (default: --data)')
    ap.add_argument('--calib-images', type=int, default=100)
    ap.add_argument('--opencv-python', metavar='PATH', help='a Python with OpenCV 4.x and numpy (OpenCV rows)')
    ap.add_argument('--memory', action='store_true', help='also peak memory, each engine alone in a process')
    ap.add_argument('--weights', help='a trained .pt: fp32 vs INT8 mAP instead of the speed table')
    ap.add_argument('--data', help='with --weights: the .data whose valid= is scored (and train= calibrates)')
    ap.add_argument('--test-data', nargs='*', default=[], help='with --weights: more .data files to score')
    ap.add_argument('--int8-variants', action='store_true', help='with --weights: every INT8 setting compared')
    ap.add_argument('--work', default=str(ROOT / 'runs' / 'bench_engines'),
                    help='where the exports are written and reused (delete it after changing the code)')
    ap.add_argument('--json', help='write every figure here')
    ap.add_argument('--probe', help=argparse.SUPPRESS)  # internal: one engine's memory, in a fresh process
    args = ap.parse_args(argv)
    if args.weights and not args.data:
        ap.error('--weights needs --data (the .data whose valid= list is scored)')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.probe:
        probe(args.probe, args.cfgs[0], args.batches[0], work, args.threads)
        return
    print(machine(args.threads))
    calib_data = args.calib or args.data
    calib = calibration_paths(calib_data, args.calib_images) if calib_data else []
    result: dict = {'machine': machine(args.threads)}
    if args.weights:
        result['accuracy'] = accuracy_table(args, work, calib)
    else:
        result['speed'] = [r.__dict__ for r in speed_table(args, work, calib)]
        if args.memory:
            result['memory'] = memory_table(args, work, calib)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
