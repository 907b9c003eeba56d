"""Build and install posenet with its compiled NMS operators.

The C++ CPU kernel is always built. The CUDA kernel is added when a CUDA toolkit is found
(``CUDA_HOME``) and torch itself is a CUDA build, or when ``FORCE_CUDA=1`` is set. Build with
``pip install -e . --no-build-isolation`` so the extension compiles against the torch you have.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return CUDA_HOME is not None and torch.version.cuda is not None and torch.cuda.is_available()


def _cuda_wheel_includes():
    """Headers of the nvidia-* wheels (cusparse.h, ...) that torch's CUDA headers include,
    needed only when the toolkit in CUDA_HOME lacks them (a bare nvcc install)."""
    if CUDA_HOME is None or os.path.exists(os.path.join(CUDA_HOME, "include", "cusparse.h")):
        return []
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in getattr(nvidia, "__path__", []):
        found += sorted(glob.glob(os.path.join(root, "cu*", "include")))
    return found


def extensions():
    src = os.path.join("lib", "nms")
    cpp = sorted(glob.glob(os.path.join(src, "*.cpp")))
    cu = sorted(glob.glob(os.path.join(src, "*.cu")))
    # No -std flag: torch adds the C++ standard its own headers need (C++20 for torch 2.14).
    # No FMA contraction and no fast-math: the kernels must round exactly like torchvision's.
    cxx = ["-O3", "-ffp-contract=off"]
    if _want_cuda() and cu:
        return [
            CUDAExtension(
                "posenet._C",
                cpp + cu,
                define_macros=[("WITH_CUDA", None)],
                include_dirs=_cuda_wheel_includes(),
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--fmad=false"]},
            )
        ]
    return [CppExtension("posenet._C", cpp, extra_compile_args={"cxx": cxx})]


def read_version() -> str:
    with open(os.path.join(HERE, "posenet", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("no __version__ in posenet/__init__.py")


setup(
    name="posenet",
    version=read_version(),
    description="MultiPoseNet (ECCV 2018) multi-person pose estimation in modern PyTorch",
    python_requires=">=3.10",
    packages=find_packages(include=["posenet", "posenet.*"]),
    package_data={"posenet.data": ["splits/*.txt", "splits/*.md"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.8",
        "omegaconf>=2.3",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.12",
    ],
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
