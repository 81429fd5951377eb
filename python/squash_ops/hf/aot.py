"""The packed encoder layers compiled ahead of time: ``torch.export`` with a dynamic token count,
then AOTInductor (``PackedEncoder(model, compile="aot")``).

A ``torch.compile``d module still runs Python on every call: dynamo's guard checks and the
generated wrapper (MiniLM, one thread: ~0.5 ms of guards per forward). The AOTInductor package
runs the layers from C++ with neither: the W8A8 all-MiniLM-L6-v2, 24 sentences one by one, 2
threads, 79.0 ms eager, 55.4 ms with torch.compile, 35.1 ms here; 100 at batch 32 69.3 / 53.5 /
49.8 ms (medians; bench/results/2026-12-03_cpu-minilm-aot_probe.log, which also has 1 thread).
The compile takes 10-15 s for MiniLM on 2 cores, once, when the encoder is built.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["compile_packed_layers"]


class _Layers(nn.Module):
    # The longest sequence arrives as the length of an empty tensor: torch.export keeps a tensor
    # dimension symbolic, while an int input reached transformers' attention kwargs as None.
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, packed: Tensor, cu: Tensor, longest: Tensor) -> Tensor:
        n = longest.shape[0]
        return self.encoder(packed, attention_mask=None, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                            max_length_q=n, max_length_k=n).last_hidden_state


def compile_packed_layers(encoder: nn.Module, hidden: int, dtype: torch.dtype) -> Callable[[Tensor, Tensor, int], Tensor]:
    """``run(packed [1, T, hidden], cu_seqlens int32 [B + 1], longest) -> [1, T, hidden]`` through
    an AOTInductor package of ``encoder`` (T >= 1, B >= 1)."""
    dim = torch.export.Dim
    example = (torch.randn(1, 12, hidden, dtype=dtype), torch.tensor([0, 5, 12], dtype=torch.int32), torch.empty(7))
    shapes = ({1: dim("tokens", min=1, max=1 << 20)}, {0: dim("bounds", min=2, max=1 << 20)},
              {0: dim("longest", min=1, max=1 << 20)})
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13's own pytree code warns about its own deprecated LeafSpec check while packaging.
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        program = torch.export.export(_Layers(encoder), example, dynamic_shapes=shapes, strict=False)
        run = torch._inductor.aoti_load_package(torch._inductor.aoti_compile_and_package(program))

    def layers(packed: Tensor, cu: Tensor, longest: int) -> Tensor:
        return run(packed, cu, torch.empty(longest))
    return layers
