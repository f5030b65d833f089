"""Held-out loss of a model (before and after training) and a one-prompt smoke generation.

The loss is computed by plain inference (llama_decode, logits of every position, cross-entropy in numpy),
independently of the trainer, so it measures route A and a user's `llama-finetune` (route B) alike.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.runtime import llama_cpp_module, load_model, new_context
from jenova_fast.finetune.windows import Windows


@dataclass(frozen=True)
class LossReport:
    loss: float  # mean next-token cross-entropy, nats/token
    accuracy: float  # fraction of next tokens predicted exactly (argmax)
    tokens: int


def heldout_loss(model_path: str | os.PathLike[str], windows: Windows, threads: int, *,
                 gpu_layers: int = 0, adapter: str | os.PathLike[str] | None = None) -> LossReport:
    """Score windows: predict their trained targets (every token 1..n_ctx, or the answers) from their prefixes."""
    lc = llama_cpp_module()
    if len(windows) == 0:
        raise FinetuneError("no held-out windows to evaluate; add records or raise --eval-fraction")
    n_ctx = windows.n_ctx
    total = correct = count = 0.0
    with load_model(model_path, gpu_layers=gpu_layers) as model, new_context(model, n_ctx, threads) as ctx:
        if adapter is not None:  # a LoRA adapter over the model, as llama.cpp applies it at inference
            lora = lc.llama_adapter_lora_init(model, os.fsencode(adapter))
            if not lora or lc.llama_set_adapters_lora(ctx, (lc.llama_adapter_lora_p_ctypes * 1)(lora), 1,
                                                      (ctypes.c_float * 1)(1.0)) != 0:
                raise FinetuneError(f"{adapter}: llama.cpp could not load this adapter over {model_path}")
        n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        batch = lc.llama_batch_init(n_ctx, 0, 1)
        try:
            batch.n_tokens = n_ctx
            tokens = np.ctypeslib.as_array(batch.token, shape=(n_ctx,))
            np.ctypeslib.as_array(batch.pos, shape=(n_ctx,))[:] = np.arange(n_ctx)
            np.ctypeslib.as_array(batch.n_seq_id, shape=(n_ctx,))[:] = 1
            np.ctypeslib.as_array(batch.logits, shape=(n_ctx,))[:] = 1
            for i in range(n_ctx):
                batch.seq_id[i][0] = 0
            for row, targets in zip(windows.tokens, windows.labels, strict=True):
                lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
                tokens[:] = row[:-1]
                if lc.llama_decode(ctx, batch) != 0:
                    raise FinetuneError(f"{model_path}: llama_decode failed while scoring held-out data")
                logits_ptr = ctypes.cast(lc.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
                logits = np.ctypeslib.as_array(logits_ptr, shape=(n_ctx, n_vocab)).astype(np.float64)
                scored = np.flatnonzero(targets >= 0)
                logits, labels = logits[scored], targets[scored]
                top = logits.max(axis=1)
                logz = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
                total += float((logz - logits[np.arange(len(scored)), labels]).sum())
                correct += float((logits.argmax(axis=1) == labels).sum())
                count += len(scored)
        finally:
            lc.llama_batch_free(batch)
    if count == 0:
        raise FinetuneError("the held-out windows hold no trained token to score")
    return LossReport(total / count, correct / count, int(count))


def smoke_generate(model_path: str | os.PathLike[str], messages: list[dict[str, str]], *,
                   max_tokens: int = 32, threads: int = 1, adapter: str | os.PathLike[str] | None = None) -> str:
    """Answer one chat turn the way the assistant will: llama-cpp-python, the GGUF's own chat template."""
    from llama_cpp import Llama

    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    prompt = messages[: last_user + 1]
    llm: Any = Llama(model_path=os.fspath(model_path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                     verbose=False, lora_path=None if adapter is None else os.fspath(adapter))
    try:
        reply = llm.create_chat_completion(messages=prompt, max_tokens=max_tokens, temperature=0.0, seed=0)
    finally:
        llm.close()
    return reply["choices"][0]["message"]["content"] or ""
