#!/usr/bin/env python
"""Compile-check the CUDA half of the NMS extension (``make cuda-check``); no GPU needed.

Builds ``posenet._C`` with ``FORCE_CUDA=1`` into a temporary directory (the in-tree CPU build
that the tests use is left alone), then loads the built library in a fresh Python process
(one that has not loaded ``posenet._C``: registering the ``posenet`` operator library twice
in one process aborts it) and checks that ``posenet::nms`` and ``posenet::batched_nms`` have
CUDA and CPU kernels and that bad inputs give clean Python errors, not a crash. Prints one line, ``cuda-check: OK ...`` or ``cuda-check: FAILED ...``,
and exits non-zero on failure.

Environment: ``CUDA_HOME`` (default /usr/local/cuda), ``TORCH_CUDA_ARCH_LIST`` (default
"8.0;9.0"; a short list keeps the build near 90 s), ``--keep`` keeps the build directory.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import sys, torch
torch.ops.load_library(sys.argv[1])
missing = [f"{op} ({key})" for op in ("posenet::nms", "posenet::batched_nms")
           for key in ("CUDA", "CPU")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(op, key)]
if missing:
    print("missing kernels: " + ", ".join(missing))
    sys.exit(1)
# The CUDA build's input checks on bad CPU inputs: each one clean Python error (a crash here
# ends the probe with a signal, which the caller reports).
B = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
S = torch.tensor([0.9, 0.8])
nan_b = B.clone()
nan_b[1, 2] = float("nan")
bad = [((nan_b, S, 0.5), ValueError), ((B, torch.tensor([0.9, float("inf")]), 0.5), ValueError),
       ((B, S[:1], 0.5), ValueError), ((B.int(), S, 0.5), TypeError), ((B[:, :2], S, 0.5), ValueError)]
for args, error in bad:
    try:
        torch.ops.posenet.nms(*args)
    except error:
        continue
    print(f"bad input {[tuple(a.shape) if hasattr(a, 'shape') else a for a in args]} gave no {error.__name__}")
    sys.exit(1)
print("ok")
"""


def build_env() -> dict:
    env = dict(os.environ)
    env["FORCE_CUDA"] = "1"
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    env.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    return env


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary build directory")
    args = parser.parse_args()

    env = build_env()
    nvcc = os.path.join(env["CUDA_HOME"], "bin", "nvcc")
    if not os.path.exists(nvcc):
        print(f"cuda-check: FAILED - no nvcc at {nvcc} (set CUDA_HOME)")
        return 1

    work = tempfile.mkdtemp(prefix="posenet-cuda-check-")
    start = time.monotonic()
    try:
        build = subprocess.run(
            [sys.executable, "setup.py", "build_ext",
             "--build-temp", os.path.join(work, "temp"), "--build-lib", os.path.join(work, "lib")],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        seconds = time.monotonic() - start
        if build.returncode != 0:
            log = os.path.join(work, "build.log")
            with open(log, "w") as f:
                f.write(build.stdout + build.stderr)
            args.keep = True
            print(tail(build.stdout + build.stderr), file=sys.stderr)
            print(f"cuda-check: FAILED - the CUDA build failed after {seconds:.0f} s (full log: {log})")
            return 1
        libs = glob.glob(os.path.join(work, "lib", "posenet", "_C*.so"))
        if not libs:
            print(f"cuda-check: FAILED - the build produced no posenet/_C*.so under {work}/lib")
            return 1
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, libs[0]], env=env, capture_output=True, text=True
        )
        if probe.returncode != 0:
            reason = tail(probe.stdout + probe.stderr, 1) or (
                f"killed by signal {-probe.returncode}" if probe.returncode < 0 else f"exit status {probe.returncode}")
            print(f"cuda-check: FAILED - the built library does not load cleanly: {reason}")
            return 1
        print(
            f"cuda-check: OK - posenet._C built with CUDA (nvcc {env['CUDA_HOME']}, arch "
            f"{env['TORCH_CUDA_ARCH_LIST']}) in {seconds:.0f} s; posenet::nms and "
            f"posenet::batched_nms have CUDA and CPU kernels; bad inputs raise clean errors"
        )
        return 0
    finally:
        if args.keep:
            print(f"cuda-check: build directory kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
