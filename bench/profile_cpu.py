"""Why PyTorch's CPU path is behind ONNX Runtime at batch 1: time per operator type in each (torch.profiler, ORT's
own profiler) on the same network, and the PyTorch forms that might close the gap, interleaved with ORT fp32.

    python bench/profile_cpu.py [--cfg cfg/yolov2-tiny-voc.cfg] [--batch 1] [--rounds 9] [--threads 2] [--compile]

Forms (random weights, seed 0, 416, BN fused): eager NCHW; eager channels_last (detect.py's Detector today);
`torch.jit.freeze` + `optimize_for_inference` (oneDNN weights prepacked once); `torch.compile` with inductor's
freezing (`--compile`: needs a C++ compiler, and its warm-up is minutes); ORT fp32 with and without spin-waiting.
OMP_WAIT_POLICY is PASSIVE unless set (as detect.py): run once more with OMP_WAIT_POLICY=ACTIVE to see its share.
"""
from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
from bench_engines import SIZE, machine, random_net  # noqa: E402
from yolo_lrm.export import export_onnx, metadata  # noqa: E402
from yolo_lrm.onnxrun import session_options  # noqa: E402


def torch_forms(cfg: str, x: torch.Tensor, compile_too: bool) -> dict[str, Callable[[], torch.Tensor]]:
    """The PyTorch forms of one network, each a no-argument call on `x` (built and warmed up here)."""
    xc = x.contiguous(memory_format=torch.channels_last)
    nchw = random_net(cfg).fuse()
    cl = random_net(cfg).fuse().to(memory_format=torch.channels_last)
    forms: dict[str, Callable[[], torch.Tensor]] = {'eager NCHW': lambda: nchw(x),
                                                    'eager channels_last': lambda: cl(xc)}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(random_net(cfg).fuse(), x)))
    forms['jit freeze + optimize_for_inference'] = lambda: frozen(x)
    if compile_too:
        import torch._inductor.config as inductor
        inductor.freezing = True  # weights become constants: oneDNN prepacks them once and fuses the activations
        compiled = torch.compile(random_net(cfg).fuse().to(memory_format=torch.channels_last))
        start = time.perf_counter()
        compiled(xc)
        print(f'torch.compile warm-up {time.perf_counter() - start:.0f} s')
        forms['torch.compile (freezing)'] = lambda: compiled(xc)
    return forms


def ort_forms(onnx_path: Path, x: torch.Tensor, threads: int) -> dict[str, Callable]:
    """ORT fp32 with the pool's spin-waiting as OMP_WAIT_POLICY says, and with spinning forced on."""
    import onnxruntime as ort
    plain = ort.InferenceSession(str(onnx_path), session_options(threads), providers=['CPUExecutionProvider'])
    opts = ort.SessionOptions()  # as session_options, but the pool spins whatever OMP_WAIT_POLICY says
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry('session.intra_op.allow_spinning', '1')
    spin = ort.InferenceSession(str(onnx_path), opts, providers=['CPUExecutionProvider'])
    feed = {'images': x.numpy()}
    return {'ORT fp32': lambda: plain.run(None, feed), 'ORT fp32, spinning': lambda: spin.run(None, feed)}


def torch_ops(fn: Callable, runs: int) -> dict[str, float]:
    """ms per call by operator type (self CPU time), torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            fn()
    out: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        out[e.key.removeprefix('aten::')] += e.self_cpu_time_total / 1e3 / runs
    return dict(out)


def ort_ops(onnx_path: Path, x: torch.Tensor, threads: int, runs: int) -> dict[str, float]:
    """ms per call by ONNX operator type (after ORT's fusions), ORT's profiler."""
    import onnxruntime as ort
    opts = session_options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / 'ort')
        session = ort.InferenceSession(str(onnx_path), opts, providers=['CPUExecutionProvider'])
        session.run(None, {'images': x.numpy()})
        for _ in range(runs):
            session.run(None, {'images': x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            out[e['args']['op_name']] += e['dur'] / 1e3 / (runs + 1)
    return dict(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cfg', default='cfg/yolov2-tiny-voc.cfg')
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--rounds', type=int, default=9)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--compile', action='store_true', help='also torch.compile with freezing (minutes of warm-up)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine(args.threads))
    x = torch.rand(args.batch, 3, SIZE, SIZE)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        onnx_path = Path(tmp) / 'net.onnx'
        net = random_net(args.cfg)
        export_onnx(net, (SIZE, SIZE), onnx_path, metadata(net, None, (SIZE, SIZE)))
        forms = {**torch_forms(args.cfg, x, args.compile), **ort_forms(onnx_path, x, args.threads)}
        for fn in forms.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in forms}
        names = list(forms)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                forms[name]()
                times[name].append((time.perf_counter() - start) * 1e3)
        base = statistics.median(times['eager channels_last'])
        print(f'\n{Path(args.cfg).stem}, batch {args.batch}, network only, ms per call (median of {args.rounds} '
              f'interleaved rounds); x = eager channels_last / this')
        for name, t in times.items():
            print(f'  {name:<38}{statistics.median(t):>9.1f}{base / statistics.median(t):>7.2f}x')
        by_torch = torch_ops(forms['eager channels_last'], 3)
        by_ort = ort_ops(onnx_path, x, args.threads, 3)
    print('\ntime by operator (ms per call, wall time of each operator: torch.profiler on eager channels_last, '
          "ORT's profiler; ORT's Conv includes the LeakyRelu it fuses)")
    for label, ops in (('PyTorch', by_torch), ('ORT', by_ort)):
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
        print(f'  {label:<8}' + ', '.join(f'{k} {v:.1f}' for k, v in top))


if __name__ == '__main__':
    main()
