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
    """Chat messages -> text, with the model's template and its own BOS/EOS strings; `system` (the
    assistant's own system prompt, `--system`) opens every conversation that has none, so a template's
    default one ("You are SmolLM...") is not what the model is trained under."""

    def __init__(self, template: str, bos_text: str, eos_text: str, system: str | None = None) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._full = Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=False)
        self._prompt = Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=True)
        self.system = system

    def with_system(self, messages: Messages) -> Messages:
        if self.system is None or any(m["role"] == "system" for m in messages):
            return messages
        return [{"role": "system", "content": self.system}, *messages]

    def conversation(self, messages: Messages) -> str:
        messages = self.with_system(messages)
        return self._full(messages=messages).prompt  # type: ignore[arg-type]  # plain dicts are the wire form

    def prompt(self, messages: Messages) -> str:
        """The messages up to (not including) the last assistant turn, ready for the model to answer."""
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        return self._prompt(messages=self.with_system(messages)).prompt  # type: ignore[arg-type]

    def answer_spans(self, messages: Messages) -> tuple[str, list[tuple[int, int]]] | None:
        """The rendered conversation and the character spans of the assistant's turns in it: each from the
        end of the generation prompt before it to the end of its end-of-turn marker (the trailing newline
        is the template's, not the answer's). None when the template renders a turn differently once more
        turns follow (then no span can be told apart)."""
        messages = self.with_system(messages)
        full = self._full(messages=messages).prompt  # type: ignore[arg-type]
        spans: list[tuple[int, int]] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self._prompt(messages=messages[:i]).prompt  # type: ignore[arg-type]
            through = self._full(messages=messages[: i + 1]).prompt  # type: ignore[arg-type]
            start, end = len(before), len(through.rstrip())
            if not (through.startswith(before) and full.startswith(through) and end > start
                    and (not spans or start >= spans[-1][1])):
                return None
            spans.append((start, end))
        return full, spans


@dataclass(frozen=True)
class Record:
    """One rendered record as tokens, and which of them the loss trains: `trained[j]` is whether token j is
    a target, i.e. part of an assistant turn (its content and its end-of-turn token); the system and user
    turns and the template's own text are context only."""

    tokens: np.ndarray  # int32
    trained: np.ndarray  # bool, same length


def tokenize_record(text: str, spans: list[tuple[int, int]], tokenize: Any, *, bos: int, add_bos: bool
                    ) -> Record:
    """Tokenize the whole text at once (as inference does), and place each span boundary where the tokens
    of the text before it end: token boundaries and span boundaries agree wherever the tokenizer does not
    merge across them (it never merges across a special token such as `<|im_start|>`)."""
    tokens = tokenize(text)
    shift = 0
    if add_bos and (len(tokens) == 0 or tokens[0] != bos):
        tokens, shift = np.concatenate([np.array([bos], dtype=np.int32), tokens]), 1

    def boundary(offset: int) -> int:
        head = tokenize(text[:offset])
        n = min(len(head), len(tokens) - shift)
        same = head[:n] == tokens[shift:shift + n]
        return shift + (n if bool(same.all()) else int(np.argmin(same)))

    trained = np.zeros(len(tokens), dtype=bool)
    for start, end in spans:
        trained[boundary(start):boundary(end)] = True
    trained[:1] = False  # nothing in the record comes before its first token
    return Record(tokens.astype(np.int32, copy=False), trained)


@dataclass
class TokenSplit:
    """The training and held-out records as tokens (split by record, so nothing leaks)."""

    train_records: list[Record]
    heldout_records: list[Record]
    train_texts: list[str]  # the rendered training records, for a trainer that reads text (route B)
    train_conversations: list[Messages]  # for the recall on the training questions
    heldout_conversations: list[Messages]
    n_train_records: int
    n_heldout_records: int
    skipped_render: int
    unmasked: int = 0  # records whose answer could not be told apart: every token of them is trained
    in_sample: bool = False  # too few records to hold any out: the held-out loss is measured on training records

    @property
    def train(self) -> np.ndarray:
        return _stream(self.train_records)

    @property
    def heldout(self) -> np.ndarray:
        return _stream(self.heldout_records)

    @property
    def longest(self) -> int:
        return max((len(r.tokens) for r in [*self.train_records, *self.heldout_records]), default=0)


def _stream(records: list[Record]) -> np.ndarray:
    return np.concatenate([r.tokens for r in records]) if records else np.zeros(0, dtype=np.int32)


SMALL_STORE = 20  # fewer records than this: none is held out (each one is a fact the user wants learned)


def heldout_count(n_records: int, eval_fraction: float | None) -> int:
    """Records to hold out: `eval_fraction` of them when given; by default 5%, at least one, except in a
    store of fewer than SMALL_STORE records, where every record is trained and the loss is measured on them."""
    if eval_fraction is None:
        return 0 if n_records < SMALL_STORE else max(1, round(0.05 * n_records))
    if not 0.0 < eval_fraction < 1.0:
        raise FinetuneError(f"--eval-fraction {eval_fraction}: must be between 0 and 1 (e.g. 0.05)")
    n_heldout = max(1, round(eval_fraction * n_records))
    if n_heldout >= n_records:
        raise FinetuneError(f"only {n_records} records: too few to hold out {eval_fraction:.0%} and still train; "
                            "leave --eval-fraction out (a small store is trained whole) or add records")
    return n_heldout


def split_and_tokenize(
    conversations: list[Messages],
    renderer: Renderer,
    tokenize: Any,
    *,
    bos: int,
    add_bos: bool,
    eval_fraction: float | None,
    seed: int = 0,
    heldout: list[Messages] | None = None,
) -> TokenSplit:
    """Shuffle records (seeded), hold out some of them (`heldout_count`, or `heldout`, records of their own,
    with all of `conversations` trained), render and tokenize each with its answer mask; every record starts
    with BOS (when the model wants one)."""
    order = list(range(len(conversations)))
    if heldout is not None:
        conversations = [*heldout, *conversations]
        n_heldout = len(heldout)
        order = list(range(len(conversations)))
    else:
        random.Random(seed).shuffle(order)
        n_heldout = heldout_count(len(order), eval_fraction)
    skipped = unmasked = 0

    def render_all(indices: list[int], texts: list[str], kept: list[Messages]) -> list[Record]:
        nonlocal skipped, unmasked
        records = []
        for i in indices:
            try:
                rendered = renderer.answer_spans(conversations[i])
                text = rendered[0] if rendered else renderer.conversation(conversations[i])
            except Exception as exc:  # a template's raise_exception(), e.g. roles that must alternate
                skipped += 1
                log.warning("record %d skipped: the chat template refused it (%s)", i, exc)
                continue
            if rendered is None:
                unmasked += 1
                spans = [(0, len(text))]
            else:
                spans = rendered[1]
            texts.append(text)
            kept.append(conversations[i])
            records.append(tokenize_record(text, spans, tokenize, bos=bos, add_bos=add_bos))
        return records

    heldout_idx, train_idx = order[:n_heldout], order[n_heldout:]
    train_texts: list[str] = []
    train_kept: list[Messages] = []
    heldout_kept: list[Messages] = []
    train_records = render_all(train_idx, train_texts, train_kept)
    heldout_records = render_all(heldout_idx, [], heldout_kept)
    in_sample = not heldout_records
    if unmasked:
        log.warning("%d records: the chat template renders a turn differently when more follow, so their answers "
                    "cannot be told apart; every token of them is trained", unmasked)
    return TokenSplit(
        train_records=train_records,
        heldout_records=heldout_records or train_records,
        train_texts=train_texts,
        train_conversations=train_kept,
        heldout_conversations=heldout_kept or train_kept,
        n_train_records=len(train_records),
        n_heldout_records=len(heldout_records),
        skipped_render=skipped,
        unmasked=unmasked,
        in_sample=in_sample,
    )


# ---- windows: what one optimizer step sees ----

PACKINGS = ("records", "stream")


def pack(records: list[Record], n_ctx: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of n_ctx + 1 tokens holding whole records: a record that does not fit in what is left of a
    window starts the next one, and the rest of the window is `pad`, never trained; so no window trains one
    record's end into the next record's start. A record longer than a window is cut into windows that
    continue one another (n_ctx apart: each token is a target once). Returns (tokens, trained)."""
    width = n_ctx + 1
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    tokens: list[np.ndarray] = []
    trained: list[np.ndarray] = []
    used = 0

    def flush() -> None:
        nonlocal used, tokens, trained
        if used:
            rest = width - used
            rows.append((np.concatenate([*tokens, np.full(rest, pad, np.int32)]),
                         np.concatenate([*trained, np.zeros(rest, bool)])))
        tokens, trained, used = [], [], 0

    for record in records:
        if len(record.tokens) > width - used:
            flush()
        start = 0
        while len(record.tokens) - start > width:  # a record longer than a window: cut, n_ctx apart
            rows.append((record.tokens[start:start + width], record.trained[start:start + width].copy()))
            rows[-1][1][0] = False
            start += n_ctx
        piece_tokens, piece_trained = record.tokens[start:], record.trained[start:].copy()
        piece_trained[0] = False  # a record's first token follows another record (or, cut, was a target already)
        tokens.append(piece_tokens)
        trained.append(piece_trained)
        used += len(piece_tokens)
    flush()
    if not rows:
        return np.zeros((0, width), np.int32), np.zeros((0, width), bool)
    return np.stack([r[0] for r in rows]).astype(np.int32), np.stack([r[1] for r in rows])


def stream_windows(records: list[Record], n_ctx: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The records as one stream cut every `stride` tokens, as llama.cpp's finetune cuts a text: windows
    start anywhere, and cross from one record into the next."""
    stream = _stream(records)
    mask = np.concatenate([r.trained for r in records]) if records else np.zeros(0, bool)
    n = n_windows(len(stream), n_ctx, stride)
    if n <= 0:
        return np.zeros((0, n_ctx + 1), np.int32), np.zeros((0, n_ctx + 1), bool)
    idx = np.arange(n)[:, None] * stride + np.arange(n_ctx + 1)[None, :]
    trained = mask[idx]
    trained[:, 0] = False
    return stream[idx].astype(np.int32, copy=False), trained


def epoch_windows(records: list[Record], n_ctx: int, *, pad: int, packing: str = "records", stride: int = 0,
                  seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """An epoch's training windows: the records in a new order (seeded by seed and epoch), packed or cut,
    the windows shuffled. Every epoch sees other neighbours and another order."""
    rng = np.random.default_rng([seed, epoch])
    shuffled = [records[i] for i in rng.permutation(len(records))]
    tokens, trained = (pack(shuffled, n_ctx, pad) if packing == "records"
                       else stream_windows(shuffled, n_ctx, stride or n_ctx // 2))
    order = rng.permutation(len(tokens))
    return tokens[order], trained[order]


def steps_per_epoch(records: list[Record], n_ctx: int, *, packing: str = "records", stride: int = 0) -> int:
    """Windows (optimizer steps) in one epoch: the same every epoch for `stream`, within a window or two for
    `records` (the packing depends on the order), so the first epoch's order stands for all."""
    if packing == "records":
        return len(pack(records, n_ctx, 0)[0])
    return n_windows(sum(len(r.tokens) for r in records), n_ctx, stride or n_ctx // 2)


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
