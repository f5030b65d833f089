"""`--format text` and `--max-tokens`: a GGUF model's chat template and tokenizer, through llama-cpp-python.

Only the vocabulary is loaded (no weights), so this is quick even for a large model. llama-cpp-python is the
optional `finetune` extra; without it these options fail with the command that installs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

INSTALL_HINT = "pip install 'jenova-fast[finetune]'"


class TemplateError(ValueError):
    """A model cannot render or count: the message names the model and the fix."""


def _llama_cpp() -> Any:
    try:
        import llama_cpp
        from llama_cpp import llama_chat_format  # noqa: F401  (the template renderer)
    except ImportError as exc:
        raise ImportError(
            f"--format text, --template-from, --max-tokens and --tokenizer need llama-cpp-python ({exc}); "
            f"install the optional extra with: {INSTALL_HINT} (it builds llama.cpp from source, minutes)"
        ) from exc
    return llama_cpp


class ModelText:
    """A model's chat template (rendering chat messages as the model was tuned on them) and tokenizer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        llama_cpp = _llama_cpp()
        import jinja2
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise TemplateError(f"{self.path} does not exist; pass a GGUF model file (e.g. models/base.gguf)")
        try:
            self._llm = llama_cpp.Llama(self.path, vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise TemplateError(f"{self.path}: llama.cpp cannot read it as a GGUF model ({exc})") from exc
        self.template: str | None = self._llm.metadata.get("tokenizer.chat_template")
        self._render: Callable[..., Any] | None = None
        if self.template:
            bos = self._llm.detokenize([self._llm.token_bos()], special=True).decode("utf-8", "replace")
            eos = self._llm.detokenize([self._llm.token_eos()], special=True).decode("utf-8", "replace")
            try:
                self._render = Jinja2ChatFormatter(self.template, eos, bos, add_generation_prompt=False)
            except jinja2.TemplateError as exc:
                raise self._broken(exc) from exc

    def _broken(self, exc: Exception) -> TemplateError:
        """A template from a model file is data: one that fails (a syntax error, or an attribute the Jinja
        sandbox refuses, as `__class__`) is an error naming the model, not a traceback."""
        return TemplateError(
            f"{self.path}: its tokenizer.chat_template cannot be rendered ({type(exc).__name__}: {exc}); use "
            "the instruction-tuned model's own GGUF, or a structured --format (messages, sharegpt, ...)"
        )

    def render(self, messages: list[dict[str, str]]) -> str:
        if self._render is None:
            raise TemplateError(
                f"{self.path} carries no tokenizer.chat_template, so --format text cannot render with it; "
                "use the instruction-tuned model's GGUF, or a structured --format (messages, sharegpt, ...)"
            )
        import jinja2  # loaded with the renderer

        try:
            return str(self._render(messages=messages).prompt)
        except jinja2.TemplateError as exc:
            raise self._broken(exc) from exc

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`, special tokens parsed (an end-of-turn marker is one token, as in training)."""
        return len(self._llm.tokenize(text.encode("utf-8", "surrogatepass"), add_bos=False, special=True))


def record_text(record: dict[str, Any], model: ModelText) -> str:
    """The chat text a record trains on, in the model's template, whatever the record's format."""
    if "text" in record:
        return str(record["text"])
    return model.render(record_messages(record))


def record_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in record:
        return list(record["messages"])
    if "conversations" in record:
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        return [{"role": roles[m["from"]], "content": m["value"]} for m in record["conversations"]]
    if "instruction" in record:
        system = [{"role": "system", "content": record["system"]}] if "system" in record else []
        return [*system, {"role": "user", "content": record["instruction"]},
                {"role": "assistant", "content": record["output"]}]
    return [*record["prompt"], *record["completion"]]


def with_system(record: dict[str, Any], system: str) -> dict[str, Any]:
    """`record` (any --format but text) opened by the system prompt: a system message first, or alpaca's
    "system" field (LLaMA-Factory's column), in the layout each trainer reads."""
    if "messages" in record:
        return {**record, "messages": [{"role": "system", "content": system}, *record["messages"]]}
    if "conversations" in record:
        return {**record, "conversations": [{"from": "system", "value": system}, *record["conversations"]]}
    if "instruction" in record:
        return {"system": system, **record}
    return {**record, "prompt": [{"role": "system", "content": system}, *record["prompt"]]}


def to_text_lines(chunk: bytes, model: ModelText) -> bytes:
    """`messages` lines -> `text` lines ({"text": rendered, "metadata"?: as it was})."""
    from jenova_fast.prepare.records import dumps_line

    out = []
    for line in chunk.splitlines():
        record = json.loads(line)
        text_record: dict[str, Any] = {"text": model.render(record["messages"])}
        if "metadata" in record:
            text_record["metadata"] = record["metadata"]
        out.append(dumps_line(text_record))
    return b"".join(out)


class Reshaper:
    """The Python-side pass over written lines for `--format text` and `--max-tokens`: each record is
    rendered (and counted) and dropped when over the budget; metadata the writer added only to name such
    records is taken out again unless `--with-metadata` asked for it."""

    def __init__(
        self, fmt: str, keep_metadata: bool, template: ModelText | None, max_tokens: int | None,
        tokenizer: ModelText | None, system: str | None = None,
    ) -> None:
        if fmt == "text" and template is None:
            raise TemplateError("--format text needs --template-from MODEL.gguf (the model whose chat template "
                                "renders the records)")
        if max_tokens is not None and tokenizer is None:
            raise TemplateError("--max-tokens needs --tokenizer MODEL.gguf (the model whose tokens are counted)")
        self.fmt, self.keep_metadata = fmt, keep_metadata
        self.template, self.max_tokens, self.tokenizer = template, max_tokens, tokenizer
        self.system = system
        self.too_long: list[dict[str, Any]] = []  # {"source", "path", "tokens", "eval"}
        self.longest = 0

    def __call__(self, chunk: bytes, held_out: bool = False) -> bytes:
        from jenova_fast.prepare.records import dumps_line

        out = []
        for line in chunk.splitlines():
            record = json.loads(line)
            meta = record.pop("metadata", None)
            text = None
            if self.system is not None:
                record = with_system(record, self.system)
            if self.fmt == "text":
                assert self.template is not None
                text = self.template.render(record["messages"])
                record = {"text": text}
            if self.max_tokens is not None:
                assert self.tokenizer is not None
                tokens = self.tokenizer.count_tokens(text if text is not None else record_text(record, self.tokenizer))
                self.longest = max(self.longest, tokens)
                if tokens > self.max_tokens:
                    where = meta or {}
                    self.too_long.append(
                        {"source": where.get("source"), "path": where.get("path"), "tokens": tokens, "eval": held_out}
                    )
                    continue
            if self.keep_metadata and meta is not None:
                record["metadata"] = meta
            out.append(dumps_line(record))
        return b"".join(out)

    def dropped(self, source: str, held_out: bool) -> int:
        return sum(1 for r in self.too_long if r["source"] == source and r["eval"] == held_out)
