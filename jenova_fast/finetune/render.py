"""train.jsonl chat records -> text in the base model's own chat template -> token streams -> windows.

llama.cpp trains on plain token windows, so each record is rendered with the template the model was
trained with (read from the GGUF, rendered by llama-cpp-python's Jinja2 formatter, as at inference) and
tokenized with special tokens parsed: the end-of-turn marker becomes the real token the model must learn to
emit, not the characters `</s>`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast.finetune.errors import FinetuneError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


def named_templates() -> dict[str, str]:
    """Templates `--template NAME` accepts, for bases whose GGUF carries none."""
    from llama_cpp import llama_chat_format as fmt

    from jenova_fast.finetune.tiny_model import TINY_CHAT_TEMPLATE

    return {
        "chatml": fmt.CHATML_CHAT_TEMPLATE,
        "llama-3": fmt.LLAMA3_INSTRUCT_CHAT_TEMPLATE,
        "mistral-instruct": fmt.MISTRAL_INSTRUCT_CHAT_TEMPLATE,
        "zephyr": TINY_CHAT_TEMPLATE,
    }


def resolve_template(model: Path, from_gguf: str | None, template: str | None) -> str:
    """`--template` (a name or a .jinja file) wins; else the GGUF's own; else an error offering both."""
    names = named_templates()
    if template:
        if template in names:
            return names[template]
        path = Path(template)
        if path.is_file():
            return _compiles(path.read_text(encoding="utf-8"), f"--template {template}",
                             f"fix the file, or pass --template NAME ({', '.join(names)})")
        raise FinetuneError(f"--template {template!r}: neither a known name ({', '.join(names)}) nor a file")
    if from_gguf:
        return _compiles(from_gguf, f"{model}: its tokenizer.chat_template",
                         f"pass --template NAME ({', '.join(names)}) or --template FILE.jinja with the format the "
                         "base model was instruction-tuned on")
    raise FinetuneError(
        f"{model}: the model has no tokenizer.chat_template; pass --template NAME ({', '.join(names)}) "
        "or --template FILE.jinja with the format the base model was instruction-tuned on"
    )


def _compiles(template: str, source: str, fix: str) -> str:
    """A template is data (a model's metadata, a user's file): one that Jinja cannot compile is one line naming
    where it came from and what to pass instead, not a traceback."""
    import jinja2
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        Jinja2ChatFormatter(template, "", "")
    except jinja2.TemplateError as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise FinetuneError(f"{source} is not a valid Jinja template ({type(exc).__name__}{where}: {exc}); "
                            f"{fix}") from exc
    return template


@dataclass
class ChatData:
    path: Path
    conversations: list[Messages]
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _messages_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return "no 'messages' list"
    for message in record["messages"]:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return "a message without a 'role'"
        if not isinstance(message.get("content"), str):
            return "a message whose 'content' is not a string"
    return None


def read_chat_records(path: str | os.PathLike[str]) -> ChatData:
    """Read train.jsonl; bad lines are skipped, counted and logged, never fatal unless none are good."""
    path = Path(path)
    data = ChatData(path, [])
    try:
        fh = open(path, encoding="utf-8", errors="strict")
    except OSError as exc:
        raise FinetuneError(f"{path}: cannot read the training data ({exc.strerror}); run `jenova-fast prepare` "
                            "to write finetune/train.jsonl") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = _messages_problem(record)
            except (json.JSONDecodeError, RecursionError):
                problem = "not valid JSON"
            if problem:
                data.skipped += 1
                data.reasons[problem] = data.reasons.get(problem, 0) + 1
                log.warning("%s:%d: skipped, %s", path, lineno, problem)
                continue
            data.conversations.append([{"role": m["role"], "content": m["content"]} for m in record["messages"]])
    if not data.conversations:
        raise FinetuneError(f"{path}: no usable chat records ({data.skipped} bad lines); each line must be "
                            '{"messages": [{"role": "user", "content": ...}, ...]}')
    return data


class Renderer:
    """Chat messages -> text, with the model's template and its own BOS/EOS strings."""

    def __init__(self, template: str, bos_text: str, eos_text: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._full = Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=False)
        self._prompt = Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=True)

    def conversation(self, messages: Messages) -> str:
        return self._full(messages=messages).prompt  # type: ignore[arg-type]  # plain dicts are the wire form

    def prompt(self, messages: Messages) -> str:
        """The messages up to (not including) the last assistant turn, ready for the model to answer."""
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        return self._prompt(messages=messages).prompt  # type: ignore[arg-type]


@dataclass
class TokenSplit:
    """Token streams of the training and held-out records (split by record, so nothing leaks)."""

    train: np.ndarray
    heldout: np.ndarray
    train_records: list[np.ndarray]  # the training stream cut back into records, for per-epoch reshuffling
    train_texts: list[str]  # the rendered training records, for a trainer that reads text (route B)
    heldout_conversations: list[Messages]
    n_train_records: int
    n_heldout_records: int
    skipped_render: int


def split_and_tokenize(
    conversations: list[Messages],
    renderer: Renderer,
    tokenize: Any,
    *,
    bos: int,
    add_bos: bool,
    eval_fraction: float,
    seed: int = 0,
    heldout: list[Messages] | None = None,
) -> TokenSplit:
    """Shuffle records (seeded), hold out `eval_fraction` of them (or use `heldout`, records of their own,
    and train on all of `conversations`), render and tokenize each side into one stream; every record starts
    with BOS (when the model wants one) so windows see real record starts."""
    if heldout is not None:
        conversations = [*heldout, *conversations]
        n_heldout = len(heldout)
        order = list(range(len(conversations)))
    else:
        if not 0.0 < eval_fraction < 1.0:
            raise FinetuneError(f"--eval-fraction {eval_fraction}: must be between 0 and 1 (e.g. 0.05)")
        order = list(range(len(conversations)))
        random.Random(seed).shuffle(order)
        n_heldout = max(1, round(eval_fraction * len(order)))
        if n_heldout >= len(order):
            raise FinetuneError(f"only {len(order)} records: too few to hold out {eval_fraction:.0%} and still train")
    skipped = 0

    def stream(indices: list[int], texts: list[str], parts: list[np.ndarray]) -> np.ndarray:
        nonlocal skipped
        for i in indices:
            try:
                text = renderer.conversation(conversations[i])
            except Exception as exc:  # a template's raise_exception(), e.g. roles that must alternate
                skipped += 1
                log.warning("record %d skipped: the chat template refused it (%s)", i, exc)
                continue
            texts.append(text)
            tokens = tokenize(text)
            if add_bos and (len(tokens) == 0 or tokens[0] != bos):
                tokens = np.concatenate([np.array([bos], dtype=np.int32), tokens])
            parts.append(tokens)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    heldout_idx, train_idx = order[:n_heldout], order[n_heldout:]
    train_texts: list[str] = []
    train_records: list[np.ndarray] = []
    return TokenSplit(
        train=stream(train_idx, train_texts, train_records),
        heldout=stream(heldout_idx, [], []),
        train_records=train_records,
        train_texts=train_texts,
        heldout_conversations=[conversations[i] for i in heldout_idx],
        n_train_records=len(train_idx),
        n_heldout_records=len(heldout_idx),
        skipped_render=skipped,
    )


def epoch_windows(records: list[np.ndarray], n_ctx: int, stride: int, *, seed: int, epoch: int) -> np.ndarray:
    """An epoch's training windows: the records in a new order (seeded by seed and epoch), cut into windows,
    the windows shuffled. Every epoch sees other record boundaries and another order."""
    rng = np.random.default_rng([seed, epoch])
    stream = np.concatenate([records[i] for i in rng.permutation(len(records))]) if records else np.zeros(0, np.int32)
    rows = windows(stream, n_ctx, stride)
    return rows[rng.permutation(len(rows))]


def n_windows(n_tokens: int, n_ctx: int, stride: int) -> int:
    """How many windows `windows` cuts from a stream of n_tokens (the same every epoch)."""
    return (n_tokens - n_ctx - 1) // stride + 1 if n_tokens > n_ctx else 0


def windows(stream: np.ndarray, n_ctx: int, stride: int) -> np.ndarray:
    """Rows of n_ctx + 1 tokens (inputs are [:-1], labels [1:]), as llama.cpp's finetune cuts them."""
    n = n_windows(len(stream), n_ctx, stride)
    if n <= 0:
        return np.zeros((0, n_ctx + 1), dtype=np.int32)
    idx = np.arange(n)[:, None] * stride + np.arange(n_ctx + 1)[None, :]
    return stream[idx].astype(np.int32, copy=False)
