"""Mixed precision and memory format: what this device runs natively, and the autocast context.

bf16 autocast is only fast where the hardware has bf16 arithmetic: CUDA GPUs of compute
capability 8.0 and up, and CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions.
On any other CPU PyTorch falls back to its reference convolution for bf16 inputs, which
measured 25x *slower* than fp32 on an AVX2-only AMD EPYC (a ResNet-18 training step of 8
256x256 images: 58 s against 2.3 s). ``train.amp: auto`` picks bf16 only where it is native;
an explicit ``bf16`` where it is not is kept (the numbers are the same) with a warning.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

AMP_DTYPES = {None: None, "none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("none", "auto", "bf16", "fp16")


class SlowPrecisionWarning(UserWarning):
    """The requested autocast dtype has no native kernels on this device."""


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 convolutions run on native kernels on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_amp(amp: str | None, device: str | torch.device) -> str | None:
    """``none``/``auto``/``bf16``/``fp16`` -> the autocast mode to use on ``device`` (None: fp32).

    ``auto`` is bf16 where it is native (``native_bf16``) and fp32 elsewhere.
    """
    amp = "none" if amp is None else str(amp).lower()
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    device = torch.device(device)
    if amp == "auto":
        return "bf16" if native_bf16(device) else None
    if amp == "bf16" and not native_bf16(device):
        warnings.warn(
            f"train.amp=bf16 on a {device.type} without native bf16 kernels: autocast falls back to slow "
            "reference convolutions (25x slower than fp32 on an AVX2 CPU); use train.amp=auto or none",
            SlowPrecisionWarning, stacklevel=2)
    return None if amp == "none" else amp


def autocast(device: str | torch.device, amp: str | None):
    """The autocast context of a resolved ``amp`` (None: a no-op context)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
