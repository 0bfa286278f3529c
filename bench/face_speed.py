"""The face network's descriptor extraction against the CPU's ceiling.

    .venv/bin/python bench/face_speed.py [--batch 32] [--reps 5]

face-probe and face-finetune put every face through face-api.js's face-recognition ResNet
(models/face_net.py, 150x150, the descriptor averaged with the mirror image's: two passes). This
prints, on the CPU it names, the photos a second each engine extracts descriptors for (median of
`--reps` timed batches after a warm-up) and the share of the ceiling that is: the arithmetic of a
photo (counted by PyTorch's FLOP counter) times the rate, over the speed of a 2048^3 matrix multiply
at the same precision (bench/keras_speed.py's ceiling). Engines: PyTorch fp32 (NCHW and
channels-last), PyTorch bf16 autocast (channels-last; only where the CPU has bf16 natively), and
onnxruntime fp32 (what feature extraction uses on the CPU where it is faster). bf16 is measured, not
used: a run's features are fp32 so that its exports compute the same numbers (bf16 features differ
by up to 1e-2); the bf16 row says what that costs. The weights do not change the speed: the network
is built untrained, so this runs without the face weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from keras_speed import cpu_description, measure_peak_gflops, native_bf16  # noqa: E402 (beside this file)


def rate(fn, x, reps: int) -> float:
    """Photos a second: median over `reps` timed calls after one warm-up."""
    fn(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diycnn.exports.onnx_format import feature_runner
    from diycnn.models.face_net import FaceRecognitionNet

    torch.manual_seed(0)
    net = FaceRecognitionNet().eval()
    x = torch.randn(args.batch, 3, 150, 150)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x[:1])
    gflop = counter.get_total_flops() / 1e9  # one photo, both passes (the mirror image's too)
    print(f"CPU: {cpu_description()}")
    print(f"face_recognition_net, 150x150, descriptor with its mirror image: {gflop:.3f} GFLOP a photo; "
          f"batch {args.batch}, {torch.get_num_threads()} threads")

    peaks = {"fp32": measure_peak_gflops("fp32")}
    if native_bf16():
        peaks["bf16"] = measure_peak_gflops("bf16")
    print("ceilings (2048^3 matrix multiply): " + ", ".join(f"{q} {v:.0f} GFLOP/s" for q, v in peaks.items()))

    cl = net.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        nchw = FaceRecognitionNet().eval()
        nchw.load_state_dict(net.state_dict())
        rows.append(("PyTorch fp32, NCHW", "fp32", rate(nchw, x, args.reps)))
        rows.append(("PyTorch fp32, channels-last", "fp32", rate(cl, x_cl, args.reps)))
        want = cl(x_cl).float().numpy()
        if "bf16" in peaks:
            def bf16(v):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return cl(v)
            rows.append(("PyTorch bf16 autocast, channels-last", "bf16", rate(bf16, x_cl, args.reps)))
            got = bf16(x_cl).float().numpy()
            print(f"bf16 descriptors differ from fp32 by up to {np.abs(got - want).max():.2g} "
                  f"(relative {np.abs(got - want).max() / np.abs(want).max():.2g})")
    runner = feature_runner(net, x[:8], lambda v: net(v.contiguous(memory_format=torch.channels_last)))
    if runner is None:  # not faster here, or not exportable: time onnxruntime anyway, plainly
        print("(feature_runner would keep PyTorch on this CPU; onnxruntime timed on its own below)")
        import copy
        import tempfile

        import onnxruntime as ort

        from diycnn.exports.onnx_format import to_onnx
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "face.onnx"
            plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
            with torch.no_grad():
                to_onnx(plain, x[:1], path, "features", freeze=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def runner(v):
            return session.run(None, {"image": v.numpy()})[0]
    rows.append(("onnxruntime fp32", "fp32", rate(runner, x, args.reps)))

    print("\n| engine | photos/s | ms a photo | share of the ceiling |")
    print("|---|---|---|---|")
    for name, q, r in rows:
        print(f"| {name} | {r:.1f} | {1000 / r:.1f} | {r * gflop / peaks[q]:.0%} of {q} |")


if __name__ == "__main__":
    main()
