"""Tensor <-> wire bytes, with the validation every incoming chunk gets."""

from __future__ import annotations

import sys

import numpy as np
import torch

from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.wire.errors import invalid

_TORCH_OF = {
    pb.DTYPE_FLOAT32: torch.float32,
    pb.DTYPE_FLOAT16: torch.float16,
    pb.DTYPE_BFLOAT16: torch.bfloat16,
}
_WIRE_OF = {v: k for k, v in _TORCH_OF.items()}

# The wire is little-endian; to_wire writes native bytes, so refuse to run elsewhere.
assert sys.byteorder == "little", "latentwatch's wire encoding assumes a little-endian host"


def to_wire(x: torch.Tensor) -> pb.Tensor:
    """Encode a tensor as little-endian bytes (fp32, fp16 or bf16 kept as is)."""
    if x.dtype not in _WIRE_OF:
        x = x.float()
    x = x.detach().contiguous().cpu()
    raw = x.view(torch.int16) if x.dtype == torch.bfloat16 else x  # numpy has no bf16
    return pb.Tensor(dtype=_WIRE_OF[x.dtype], shape=list(x.shape), data=raw.numpy().tobytes())


def from_wire(t: pb.Tensor, expect_width: int, what: str = "activations") -> torch.Tensor:
    """Decode a [n_tokens, width] tensor to fp32, rejecting anything malformed.
    ``what`` names the tensor in error messages."""
    if t.dtype not in _TORCH_OF:
        raise invalid(f"unknown dtype {t.dtype}; use DTYPE_FLOAT32, DTYPE_FLOAT16 or DTYPE_BFLOAT16")
    shape = list(t.shape)
    if len(shape) != 2 or shape[0] == 0:
        raise invalid(f"{what} must have shape [n_tokens>0, {expect_width}], got {shape}")
    if shape[1] != expect_width:
        raise invalid(f"{what} have width {shape[1]} but {expect_width} are expected")
    dtype = _TORCH_OF[t.dtype]
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = shape[0] * shape[1] * itemsize
    if len(t.data) != expected:
        raise invalid(f"{what} carry {len(t.data)} bytes but shape {shape} of {dtype} needs {expected}")
    np_dtype = (
        np.dtype("<f4") if dtype == torch.float32 else np.dtype("<f2") if dtype == torch.float16 else np.dtype("<i2")
    )
    arr = np.frombuffer(t.data, dtype=np_dtype).reshape(shape)
    x = torch.from_numpy(arr.copy())
    x = x.view(torch.bfloat16) if dtype == torch.bfloat16 else x
    x = x.float()
    if not torch.isfinite(x).all():
        raise invalid(f"{what} contain NaN or Inf")
    return x
