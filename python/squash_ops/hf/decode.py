"""Greedy decoding with a static KV cache, one forward per token, optionally as one CUDA graph.

``GreedyDecoder`` runs the prompt once (prefill), then each ``step()`` feeds the last token and
writes the next one — argmax, the token record and the step counter all happen on the device, so
a step has no host work and no host sync and is captured once with ``capture()`` and replayed
per token (what the end-to-end benchmark times). The cache is a transformers ``StaticCache``:
its buffers and its filled length live at fixed addresses and ``update`` advances the length on
the device, so a replay at step t writes position P + t.

``reset()`` rewinds to the end of the prompt (the prompt's keys stay; later ones are
overwritten), so ``generate()`` can run again without a new prefill or a new capture.
Prompts are one batch of equal length without padding.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from transformers import StaticCache


def cache_kwarg(model) -> str:
    """The forward's name for the cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``
    (5.17; later versions still accept it with a deprecation warning)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class GreedyDecoder:
    """Greedy decoding of ``max_new_tokens`` tokens after ``prompt`` ([B, P] token ids).

    ``compile=True`` wraps the step in ``torch.compile(fullgraph=True)`` (compiled on first use).
    After ``generate()``, ``tokens`` holds ``[B, max_new_tokens]``: the token after the prompt
    (from the prefill) followed by one token per step; ``logits`` the last step's ``[B, vocab]``.
    """

    def __init__(self, model, prompt: Tensor, max_new_tokens: int, compile: bool = False):
        if prompt.ndim != 2 or prompt.shape[1] == 0 or max_new_tokens < 1:
            raise ValueError(f"GreedyDecoder: prompt must be [batch, length > 0] token ids and max_new_tokens >= 1, "
                             f"got shape {list(prompt.shape)} and {max_new_tokens}")
        self.model = model
        self.prompt_len = prompt.shape[1]
        self.max_new_tokens = max_new_tokens
        self._kw = cache_kwarg(model)
        # The last generated token is never fed back, so the cache needs P + T - 1 slots.
        self.cache = StaticCache(config=model.config, max_cache_len=self.prompt_len + max_new_tokens - 1)
        logits = model(prompt, use_cache=True, **{self._kw: self.cache}).logits[:, -1]
        self.first = logits.argmax(-1, keepdim=True)
        self.ids = self.first.clone()
        self.tokens = torch.zeros(prompt.shape[0], max_new_tokens, dtype=torch.long, device=prompt.device)
        self.tokens[:, :1] = self.first
        self.position = torch.ones(1, dtype=torch.long, device=prompt.device)  # next column of tokens
        self.logits = logits
        self._run = torch.compile(self._step, fullgraph=True) if compile else self._step
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self) -> Tensor:
        logits = self.model(self.ids, use_cache=True, **{self._kw: self.cache}).logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        self.tokens.index_copy_(1, self.position, nxt)
        self.ids.copy_(nxt)
        self.position.add_(1)
        return logits

    def reset(self) -> None:
        """Back to the end of the prompt (device-side writes only)."""
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(self.prompt_len)
        self.ids.copy_(self.first)
        self.position.fill_(1)

    def capture(self, warmup: int = 2) -> None:
        """Captures one step in a CUDA graph (after `warmup` eager steps on a side stream, which
        settle lazy initialization, cuBLAS workspaces and compilation); later steps replay it."""
        if not self.ids.is_cuda:
            raise ValueError("GreedyDecoder.capture: CUDA graphs need the model and prompt on a CUDA device")
        warmup = min(warmup, self.max_new_tokens - 1)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.reset()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records the step without running it
            self.logits = self._run()

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._run()

    def generate(self) -> Tensor:
        """Rewinds and decodes all ``max_new_tokens``; returns ``tokens`` (no host sync)."""
        self.reset()
        for _ in range(self.max_new_tokens - 1):
            self.step()
        return self.tokens
