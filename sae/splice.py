"""Edit one block's output during a forward pass: how the downstream, embedding and ablation metrics
splice a reconstruction (or an ablation) into the residual stream."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn

Reconstruct = Callable[[Tensor], Tensor]
"""Maps activations [n_tokens, d_model] to their reconstruction [n_tokens, d_model]."""


@contextlib.contextmanager
def edited_output(block: nn.Module | None, edit: Callable[[Tensor], Tensor] | None) -> Iterator[None]:
    """Within the block, `block`'s output hidden states [B, T, d] are replaced by `edit(hidden)` (HF blocks
    return a tuple whose first item is the hidden states); no block or no edit: a clean run."""
    if block is None or edit is None:
        yield
        return

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
