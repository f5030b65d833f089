"""What the model says back: each training record's own question asked greedily, through the model's own chat
template and the run's system prompt, as the assistant will ask it; an answer counts when it states what the
record's answer states.

"States" is judged on the record's distinctive words: the words of its answer (within the tokens generated)
that are neither in its question nor in most answers of the sample (the store's boilerplate, "I learned
that..."); an answer with at least half of them says the fact back.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]

SAMPLE = 50  # records asked at most: a few seconds on a 135M model
MAX_TOKENS = 48  # tokens generated per answer: insight answers open with ~25 tokens of boilerplate
_WORD = re.compile(r"\w{3,}")


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def question_and_answer(messages: Messages) -> tuple[Messages, str]:
    """The conversation up to its last user turn (what is asked), and the assistant's answer to it."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    answer = next((m["content"] for m in messages[last_user + 1:] if m["role"] == "assistant"), "")
    return messages[: last_user + 1], answer


class Asker:
    """A model loaded once for greedy chat answers (llama-cpp-python, the GGUF's own chat template), with a LoRA
    adapter over it as llama.cpp applies one."""

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int, threads: int,
                 adapter: str | os.PathLike[str] | None = None) -> None:
        from llama_cpp import Llama

        self.llm: Any = Llama(model_path=os.fspath(model_path), n_ctx=n_ctx, n_threads=threads,
                              n_threads_batch=threads, verbose=False,
                              lora_path=None if adapter is None else os.fspath(adapter))

    def __enter__(self) -> Asker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.llm.close()

    def answer(self, messages: Messages, system: str | None, max_tokens: int = MAX_TOKENS) -> str:
        if system is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        reply = self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                repeat_penalty=1.0, seed=0)
        return str(reply["choices"][0]["message"]["content"] or "").strip()

    def head(self, text: str, max_tokens: int) -> str:
        """The part of `text` that its first `max_tokens` tokens spell: all an answer that long can say."""
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return bytes(self.llm.detokenize(tokens[:max_tokens])).decode("utf-8", "replace")


def distinctive(reference: str, question: str, common: set[str]) -> set[str]:
    return words(reference) - words(question) - common


def says_back(answer: str, reference: str, question: str, common: set[str]) -> bool:
    wanted = distinctive(reference, question, common)
    if not wanted:  # nothing distinctive: the answer must begin as the reference does
        return " ".join(answer.lower().split()).startswith(" ".join(reference.lower().split())[:40])
    return len(wanted & words(answer)) * 2 >= len(wanted)


def common_words(references: list[str]) -> set[str]:
    """Words in more than half of the answers: the store's boilerplate, not a fact."""
    if len(references) < 4:
        return set()
    counts = Counter(w for text in references for w in words(text))
    return {w for w, n in counts.items() if n * 2 > len(references)}


@dataclass
class Recall:
    asked: int = 0
    recalled: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)  # question, reference, answer

    @property
    def fraction(self) -> float:
        return self.recalled / self.asked if self.asked else 0.0


def sample(conversations: list[Messages], limit: int = SAMPLE, seed: int = 0) -> list[Messages]:
    """At most `limit` records with a question and an answer, the same ones for every model of a run."""
    usable = [c for c in conversations if question_and_answer(c)[1]]
    if len(usable) <= limit:
        return usable
    return random.Random(seed).sample(usable, limit)


def recall(model_path: str | os.PathLike[str], conversations: list[Messages], *, system: str | None,
           threads: int, n_ctx: int, max_tokens: int = MAX_TOKENS,
           adapter: str | os.PathLike[str] | None = None) -> Recall:
    """Ask each record's question (the caller samples them: `sample`) and count the facts said back."""
    result = Recall()
    with Asker(model_path, n_ctx=n_ctx, threads=threads, adapter=adapter) as asker:
        pairs = [question_and_answer(c) for c in conversations]
        references = [asker.head(answer, max_tokens) for _, answer in pairs]
        common = common_words(references)
        for (question, _), reference in zip(pairs, references, strict=True):
            answer = asker.answer(question, system, max_tokens)
            asked_text = " ".join(m["content"] for m in question if m["role"] != "system")
            result.asked += 1
            result.recalled += says_back(answer, reference, asked_text, common)
            result.examples.append({"question": question[-1]["content"], "reference": reference, "answer": answer})
    return result
