"""`--train SPEC` on real tiny models: exactly the named tensors change, every other tensor keeps its bytes,
held-out loss falls; frozen quantized types train; memory refusal; Ctrl-C; --requantize; phi-2's head."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from jenova_fast.finetune import FinetuneConfig, FinetuneError, finetune
from jenova_fast.finetune.metadata import open_reader
from jenova_fast.finetune.trainable import select
from tests.finetune.conftest import TRAIN_SETTINGS, chat_records, write_jsonl

SETTINGS = {**TRAIN_SETTINGS, "epochs": 1}


def _tensor_bytes(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, bytes(t.data.tobytes())) for t in open_reader(path).tensors}


def _run(tmp_path: Path, base: Path, data: Path, **kw: object):
    out = tmp_path / "models" / "jenova.gguf"
    config = FinetuneConfig(base=base, data=data, out=out, report=tmp_path / "r.json", **{**SETTINGS, **kw})
    return finetune(config), out


def _changed(base: Path, out: Path) -> set[str]:
    before, after = _tensor_bytes(base), _tensor_bytes(out)
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


PRESETS = {  # spec -> what it must select in the 2-block tiny llama
    "last:1": lambda n: n.startswith("blk.1.") or n.startswith("output"),
    "head": lambda n: n.startswith("output"),
    "attn": lambda n: fnmatch.fnmatch(n, "blk.*.attn_[qkvo]*"),
    "ffn": lambda n: fnmatch.fnmatch(n, "blk.*.ffn_[gud]*"),
    "norms": lambda n: "norm" in n,
    "blk.0.ffn_up.*,output.weight": lambda n: n in ("blk.0.ffn_up.weight", "output.weight"),
}


@pytest.mark.parametrize("spec", list(PRESETS))
def test_a_spec_trains_exactly_its_tensors_and_keeps_the_others_bytes(tmp_path, tiny_base, small_chat_jsonl, spec):
    report, out = _run(tmp_path, tiny_base, small_chat_jsonl, train=spec)
    names = [t.name for t in open_reader(tiny_base).tensors]
    expected = {n for n in names if PRESETS[spec](n) and n != "token_embd.weight"}
    assert set(report.trained_tensors) == expected
    assert _changed(tiny_base, out) == expected  # the rest byte-identical to the base
    assert report.trained_params == sum(int(t.n_elements) for t in open_reader(tiny_base).tensors
                                        if t.name in expected)
    assert report.heldout_loss_after < report.heldout_loss_before
    assert len(report.step_losses) == report.steps > 0 and report.eval_points[0] == (0, report.heldout_loss_before)


@pytest.fixture(scope="module")
def q4k2_base(q_source: Path) -> Path:
    """Two blocks of 256-wide rows quantized to Q4_K_M by llama.cpp: last:1 leaves a whole block frozen."""
    import llama_cpp.llama_cpp as lc

    out = q_source.with_name("q4k2-Q4_K_M.gguf")
    params = lc.llama_model_quantize_default_params()
    params.ftype, params.nthread = lc.LLAMA_FTYPE_MOSTLY_Q4_K_M, 1
    assert lc.llama_model_quantize(str(q_source).encode(), str(out).encode(), params) == 0
    return out


def test_last_1_on_a_q4_k_m_base_converts_frozen_k_quants_to_q8_0_and_falls(tmp_path, q4k2_base, small_chat_jsonl):
    q4k_base = q4k2_base
    report, out = _run(tmp_path, q4k_base, small_chat_jsonl, train="last:1", lr=3e-4)
    assert report.heldout_loss_after < report.heldout_loss_before - 1.0, report
    work = {t.name: t.tensor_type.name for t in open_reader(report.working_copy).tensors}
    base = _tensor_bytes(q4k_base)
    assert {work[n] for n in report.trained_tensors} == {"F32"}
    frozen_k = [n for n in base if n.startswith("blk.0.") and base[n][0] in ("Q4_K", "Q6_K")]
    assert frozen_k and {work[n] for n in frozen_k} == {"Q8_0"}  # forward-only K-quants: the fast kernel
    assert work["token_embd.weight"] == base["token_embd.weight"][0]
    assert sum(report.converted.values()) == len(frozen_k) and report.frozen_bytes > 0
    assert _changed(q4k_base, out) == set(report.trained_tensors)  # the result keeps the base's own bytes


def test_the_frozen_type_table():
    from jenova_fast.finetune.working_copy import frozen_type

    def on_cpu(t: str, backward: bool) -> str:
        return frozen_type(t, in_backward=backward, matrix=True, gpu=False)

    assert [on_cpu(t, False) for t in ("F16", "Q8_0", "Q4_0", "Q5_0", "IQ4_NL")] == ["F16", "Q8_0", "Q4_0", "Q5_0",
                                                                                      "IQ4_NL"]
    assert {on_cpu(t, False) for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "Q4_1")} == {"Q8_0"}
    assert {on_cpu(t, True) for t in ("F16", "BF16", "Q4_0", "Q4_K", "Q6_K", "Q8_0")} == {"F32"}  # on the backward path
    assert {frozen_type(t, in_backward=True, matrix=True, gpu=False, lean=True) for t in ("F16", "Q4_K")} == {"Q8_0"}
    assert frozen_type("F32", in_backward=True, matrix=True, gpu=False) == "F32"
    assert frozen_type("Q4_K", in_backward=False, matrix=False, gpu=False) == "Q4_K"  # vectors as stored
    assert frozen_type("Q4_K", in_backward=False, matrix=True, gpu=True) == "F32"


def test_requantize_base_gives_a_model_of_the_base_size_that_generates(tmp_path, q4k_base, small_chat_jsonl):
    from llama_cpp import Llama

    report, out = _run(tmp_path, q4k_base, small_chat_jsonl, train="last:1", lr=5e-4, requantize="base")
    base = _tensor_bytes(q4k_base)
    written = _tensor_bytes(out)
    for name in report.trained_tensors:  # matrices back to their own type, vectors F32 as in the base
        assert written[name][0] == base[name][0], name
    assert report.requantized and set(report.requantized) <= set(report.trained_tensors)
    assert out.stat().st_size < 1.1 * q4k_base.stat().st_size
    assert report.heldout_loss_after < report.heldout_loss_before - 1.0  # scored on the requantized file
    llm = Llama(model_path=str(out), n_ctx=256, n_threads=1, verbose=False)
    try:
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": "What about sleep?"}],
                                           max_tokens=8, temperature=0.0, seed=0)
    finally:
        llm.close()
    assert reply["usage"]["completion_tokens"] > 0


def test_phi2_trains_its_head_and_refuses_its_blocks(tmp_path):
    from jenova_fast.finetune.tiny_model import write_tiny_model

    base = write_tiny_model(tmp_path / "phi2.gguf", arch="phi2")
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(40, seed=2))
    with pytest.raises(FinetuneError, match=r"phi2.*LayerNorm and GELU.*--train head"):
        _run(tmp_path, base, data, train="last:1", engine="stock")
    report, out = _run(tmp_path, base, data, engine="stock")  # no --train: head is phi2's default on stock
    assert report.train_spec == "head" and "phi2" in report.train_choice
    assert set(report.trained_tensors) == {"output_norm.weight", "output_norm.bias", "output.weight", "output.bias"}
    assert _changed(base, out) == set(report.trained_tensors)
    assert report.heldout_loss_after < report.heldout_loss_before - 0.5, report


def test_default_is_all_when_it_fits_else_the_largest_last_n(tmp_path, tiny_base, small_chat_jsonl):
    from jenova_fast.finetune.memory import HEADROOM
    from jenova_fast.finetune.pipeline import plan_training
    from jenova_fast.finetune.validate import inspect_model

    report, _ = _run(tmp_path, tiny_base, small_chat_jsonl)
    assert report.train_spec == "all" and "chosen for" in report.train_choice
    info = inspect_model(tiny_base)

    def need(spec: str) -> int:
        config = FinetuneConfig(base=tiny_base, data=small_chat_jsonl, n_ctx=256, train=spec)
        return plan_training(info, config).need.total

    budget = int(need("last:1") * HEADROOM) + 1
    assert need("all") * HEADROOM > budget  # all (= last:2 here) does not fit, last:1 does
    report, _ = _run(tmp_path, tiny_base, small_chat_jsonl, memory_available=budget)
    assert report.train_spec == "last:1" and "all needs" in report.train_choice
    assert report.trained_params == select("last:1", info.tensors, info.n_layer).n_params


def test_a_run_that_cannot_fit_is_refused_with_the_numbers(tmp_path, tiny_base, small_chat_jsonl):
    with pytest.raises(FinetuneError, match=r"--train all at --ctx 256 needs about .* GiB = weights .* but 0.05 GiB"):
        _run(tmp_path, tiny_base, small_chat_jsonl, train="all", memory_available=50 * 2**20)
    with pytest.raises(FinetuneError, match=r"not even --train last:1 fits.*try --train head"):
        _run(tmp_path, tiny_base, small_chat_jsonl, memory_available=50 * 2**20)
    assert not (tmp_path / "models").exists()


def test_stride_ctx_halves_the_steps(tmp_path, tiny_base, small_chat_jsonl):
    half, _ = _run(tmp_path, tiny_base, small_chat_jsonl, train="head", packing="stream")
    once, _ = _run(tmp_path, tiny_base, small_chat_jsonl, train="head", stride=256, packing="stream")
    assert once.stride == 256 and half.stride == 128
    assert abs(once.steps * 2 - half.steps) <= 2


def test_plot_draws_train_and_heldout_loss(tmp_path, tiny_base, small_chat_jsonl):
    pytest.importorskip("matplotlib")
    report, _ = _run(tmp_path, tiny_base, small_chat_jsonl, train="head", plot=tmp_path / "loss.png")
    assert Path(report.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(Path(report.report).read_text(encoding="utf-8"))
    assert len(saved["step_losses"]) == saved["steps"] and saved["eval_points"][0][0] == 0


def test_gpu_layers_without_a_gpu_build_names_the_install_line(tmp_path, tiny_base, small_chat_jsonl):
    import llama_cpp.llama_cpp as lc

    if lc.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python has a GPU backend")
    with pytest.raises(FinetuneError, match='CMAKE_ARGS="-DGGML_CUDA=on" pip install'):
        _run(tmp_path, tiny_base, small_chat_jsonl, gpu_layers=99, engine="stock")
    from jenova_fast.engine import build

    if build.find() is not None:  # the patched engine, built without --gpu: its own build line
        with pytest.raises(FinetuneError, match=r"engine build --gpu cuda"):
            _run(tmp_path, tiny_base, small_chat_jsonl, gpu_layers=99, engine="patched")


def test_gpu_working_copy_keeps_frozen_matrices_f32(q4k_base):
    from jenova_fast.finetune import working_copy

    reader = open_reader(q4k_base)
    on_gpu = working_copy.plan(reader, {"output.weight"}, gpu=True)
    on_cpu = working_copy.plan(reader, {"output.weight"}, gpu=False)
    frozen_matrices = [t for t in on_gpu.tensors
                       if not t.trained and t.base_type not in ("F32", "F16") and t.name != "token_embd.weight"]
    assert frozen_matrices and {t.work_type for t in frozen_matrices} == {"F32"}
    assert on_gpu.converted != on_cpu.converted


FROZEN_TYPES = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_NL",
                "IQ4_XS"]
_CHILD = """
import sys
import numpy as np
from jenova_fast.finetune.metadata import open_reader
from jenova_fast.finetune.train_inprocess import train_inprocess
from jenova_fast.finetune.windows import Windows
from jenova_fast.finetune.working_copy import plan, write_working_copy
base, work, out = sys.argv[1:4]
reader = open_reader(base)
trained = {t.name for t in reader.tensors if t.name.startswith(("blk.1.", "output"))}
write_working_copy(base, plan(reader, trained), work)
rows = np.random.default_rng(0).integers(3, 259, size=(3, 257)).astype(np.int32)
result = train_inprocess(work, out, lambda epoch: Windows(rows[:2]), Windows(rows[2:]), epochs=1, lr=1e-3, threads=1,
                         trained=frozenset(trained))
print("steps", result.steps, "loss", result.step_losses[0])
"""


@pytest.mark.parametrize("ftype", FROZEN_TYPES)
def test_every_frozen_type_a_user_can_bring_trains_last_1(tmp_path, ftype, q_source):
    """In a child process: an abort inside ggml would otherwise take pytest down with it."""
    import llama_cpp.llama_cpp as lc

    base = tmp_path / f"base-{ftype}.gguf"
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = 1
    assert lc.llama_model_quantize(str(q_source).encode(), str(base).encode(), params) == 0
    frozen = {t.tensor_type.name for t in open_reader(base).tensors if not t.name.startswith(("blk.1.", "output"))}
    child = [sys.executable, "-c", _CHILD, str(base), str(tmp_path / "w.gguf"), str(tmp_path / "o.gguf")]
    done = subprocess.run(child, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"frozen {frozen}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert "steps 2 loss" in done.stdout


@pytest.fixture(scope="module")
def q_source(tmp_path_factory) -> Path:
    """An F32 tiny llama whose rows are multiples of 256, so every K-quant and IQ type applies."""
    from jenova_fast.finetune.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("q") / "src.gguf", n_embd=256, n_ff=512, n_layer=2)


@pytest.mark.parametrize("what", [["--train", "head"], ["--adapter", "lora:4"]], ids=["head", "lora"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_within_a_chunk_with_nothing_written(tmp_path, tiny_base, signum, what):
    """A full model and an adapter alike: the installed model, the base and the models folder as they were."""
    if what[0] == "--adapter":
        from jenova_fast.engine import EngineError, choose

        try:
            if choose("auto").kind != "patched":
                pytest.skip("LoRA trains on the patched engine: jenova-fast engine build")
        except EngineError as exc:
            pytest.skip(str(exc))
    base_bytes = tiny_base.read_bytes()
    data = write_jsonl(tmp_path / "big.jsonl", chat_records(1000, seed=3))
    models = tmp_path / "models"
    models.mkdir()
    installed = models / "jenova.gguf"
    installed.write_bytes(base_bytes)
    with subprocess.Popen(
        [sys.executable, "-m", "jenova_fast", "finetune", "--base", str(tiny_base), "--data", str(data),
         "--out", str(installed), "--ctx", "256", "--lr", "1e-3", "--epochs", "3", *what],
        stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # wait until training runs
            lines.append(line)
            if "loss before" in line:
                break
        time.sleep(1.5)
        proc.send_signal(signum)
        sent = time.monotonic()
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
        waited = time.monotonic() - sent
    assert code == 128 + signum, "".join(lines) + rest
    assert "interrupted; nothing was written" in rest and "Traceback" not in rest
    assert waited < 20  # one chunk: at most ~10 s of steps, plus start-up of nothing else
    assert installed.read_bytes() == base_bytes and tiny_base.read_bytes() == base_bytes
    assert sorted(p.name for p in models.iterdir()) == ["jenova.gguf"]  # no adapter, no temp file


def test_select_rejects_unknown_items_and_names_the_presets():
    tensors = [("token_embd.weight", 10), ("blk.0.attn_q.weight", 4), ("output.weight", 10)]
    assert select("all", tensors, 1).trained == ("blk.0.attn_q.weight", "output.weight")
    assert select("last:0", tensors, 1).trained == ("output.weight",)
    with pytest.raises(FinetuneError, match=r"'atn' is not a preset .*last:N"):
        select("atn", tensors, 1)
    with pytest.raises(FinetuneError, match="last:N needs a whole number"):
        select("last:x", tensors, 1)
    with pytest.raises(FinetuneError, match="selects no tensor"):
        select("token_embd.*", tensors, 1)


def test_step_losses_match_the_running_mean(tmp_path, tiny_base, small_chat_jsonl):
    """Every window scores the same number of tokens here (stock: all of them), so the epoch's token mean is the
    mean of the steps' means."""
    report, _ = _run(tmp_path, tiny_base, small_chat_jsonl, train="head", engine="stock", packing="stream")
    assert np.mean(report.step_losses) == pytest.approx(report.per_epoch[0]["train_loss"], rel=1e-4)


def test_probe_refuses_what_aborts_in_a_child_and_passes_what_trains(tmp_path, tiny_base):
    from jenova_fast.finetune.probe import probe
    from jenova_fast.finetune.tiny_model import write_tiny_model

    phi2 = write_tiny_model(tmp_path / "phi2.gguf", arch="phi2")
    everything = tuple(t.name for t in open_reader(phi2).tensors if t.name != "token_embd.weight")
    with pytest.raises(FinetuneError, match=r"cannot train --train all of architecture 'phi2'.*exit -6.*NORM"):
        probe(phi2, everything, 256, architecture="phi2", spec="all", engine="stock")
    names = tuple(t.name for t in open_reader(tiny_base).tensors if t.name != "token_embd.weight")
    probe(tiny_base, names, 256, architecture="llama", spec="all")  # trains: no error


def test_eval_data_is_the_heldout_set_and_every_data_record_trains(tmp_path, tiny_base, small_chat_jsonl):
    held = write_jsonl(tmp_path / "eval.jsonl", chat_records(12, seed=9))
    report, _ = _run(tmp_path, tiny_base, small_chat_jsonl, train="head", eval_data=held)
    assert report.records == {"train": 40, "heldout": 12, "skipped": 0}
    assert report.heldout_loss_after < report.heldout_loss_before


def test_a_working_copy_that_cannot_be_written_is_an_error_naming_the_fix(tmp_path, q8_base):
    """A file size limit stands in for a full disk (root ignores read-only folders); no temp file stays."""
    base = tmp_path / q8_base.name
    base.write_bytes(q8_base.read_bytes())
    child = f"""
import resource
from pathlib import Path
from jenova_fast.finetune import FinetuneError, working_copy
from jenova_fast.finetune.metadata import open_reader
base = Path({str(base)!r})
work = working_copy.plan(open_reader(base), {{t.name for t in open_reader(base).tensors}})
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    working_copy.working_copy(base, work)
except FinetuneError as exc:
    print(exc)
"""
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert "cannot write the working copy (" in done.stdout, done.stdout + done.stderr
    assert "set XDG_CACHE_HOME to a writable folder" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([base.name, "cache"])
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_gpu_devices_and_the_gpu_memory_check():
    from jenova_fast.finetune import memory
    from jenova_fast.finetune.runtime import gpu_devices

    devices = gpu_devices()
    import llama_cpp.llama_cpp as lc

    assert bool(devices) <= bool(lc.llama_supports_gpu_offload())  # a CPU build sees no GPU
    assert all(d.total >= d.free >= 0 and d.name for d in devices)
    need = memory.MemoryEstimate(weights=2**30, optimizer=2**30, activations=2**29, gpu=2**30)
    memory.check_gpu(need, 2 * 2**30, "m.gguf")
    with pytest.raises(FinetuneError, match=r"m.gguf: the offloaded layers need about 1.00 GiB .* 0.50 GiB is free"):
        memory.check_gpu(need, 2**29, "m.gguf")


@pytest.mark.parametrize("base_fixture", ["q8_base", "q4k2_base"])
def test_quantized_bases_train_attn_through_frozen_ffn_and_keep_the_rest(request, base_fixture, tmp_path,
                                                                         small_chat_jsonl):
    base = request.getfixturevalue(base_fixture)
    report, out = _run(tmp_path, base, small_chat_jsonl, train="attn", lr=5e-4)
    assert report.trained_tensors and all(".attn_" in n for n in report.trained_tensors)
    assert _changed(base, out) == set(report.trained_tensors)
    assert report.heldout_loss_after < report.heldout_loss_before
