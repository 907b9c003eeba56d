"""Running ``scripts/*.py`` from the tests.

A script's own process costs its imports (torch, torchvision, OpenCV, pycocotools: seconds
each time), which is most of a tiny run. So a script runs inside the test process by default,
exactly as ``python scripts/NAME.py ARGS`` would run it (``runpy`` with ``__main__``, the
repository as the working directory, one torch thread, stdout and stderr captured, warnings
printed to the captured stderr, ``sys.exit`` turned into the exit code), and in a process of
its own where the process is what is tested or shared state would leak: ``torchrun``, all
cores (``threads=None``, the learning proofs) or ``subprocess=True``.
``POSENET_TEST_SUBPROCESS=1`` runs every script in its own process.
"""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import socket
import subprocess as _subprocess
import sys
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(script, *args, torchrun: int = 0, timeout: float = 600, threads: int | None = 1,
               subprocess: bool = False, check: bool = True):
    """Run ``scripts/<script>`` with ``args``; a ``CompletedProcess`` (``returncode``, ``stdout``,
    ``stderr``). ``check``: assert exit code 0. ``threads=None`` leaves the thread count to
    torch (all cores) in a process of its own."""
    args = [str(a) for a in args]
    if torchrun or threads is None or subprocess or os.environ.get("POSENET_TEST_SUBPROCESS") == "1":
        result = _in_a_process(script, args, torchrun, timeout, threads)
    else:
        result = _in_this_process(script, args, threads)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _in_a_process(script, args, torchrun, timeout, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else dict(os.environ)
    if not threads:
        env.pop("OMP_NUM_THREADS", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    if torchrun:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(torchrun),
               "--master_addr", "127.0.0.1", "--master_port", str(port), str(REPO / "scripts" / script), *args]
    else:
        cmd = [sys.executable, str(REPO / "scripts" / script), *args]
    return _subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)



def _in_this_process(script, args, threads):
    import torch

    path = REPO / "scripts" / script
    out, err = io.StringIO(), io.StringIO()

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    saved = sys.argv, os.getcwd(), torch.get_num_threads(), dict(os.environ)
    code = 0
    try:
        sys.argv = [str(path), *args]
        os.chdir(REPO)
        torch.set_num_threads(threads)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    err.write(f"{e.code}\n")
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - what a process would print before dying
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        torch.set_num_threads(saved[2])
        os.environ.clear()
        os.environ.update(saved[3])
    return _subprocess.CompletedProcess([sys.executable, str(path), *args], code, out.getvalue(), err.getvalue())
