"""Security review (issue 10, item 7): names never become unchecked path components, the CPA state dir is
refused when another user could write in it, nothing is written through a planted symlink, files we create
are not writable by others. Real files, real processes; the tests that chown need root."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jenova_fast._fs import UnsafePathError, private_dir, user_component
from jenova_fast.prepare.stores import resolve_roots
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cpa(*args: str | os.PathLike[str], home: Path, pure: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("JENOVA_FAST_PURE", None)
    if pure:
        env["JENOVA_FAST_PURE"] = "1"
    return subprocess.run([sys.executable, "-m", "jenova_fast", "cpa", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=lambda: os.umask(0o022))


def _history(path: Path) -> Path:
    path.write_text(json.dumps({"user_message": "how do I prune tomatoes", "ai_message": "so"}) + "\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/etc", "x\x00y"])
def test_user_names_are_one_path_component(name):
    with pytest.raises(UnsafePathError, match="not a user name"):
        user_component(name)
    assert user_component("ann.o'neil-2") == "ann.o'neil-2"


def test_prepare_user_traversal_is_refused(tmp_path, monkeypatch):
    """`--user ../x` read ~/.jenova-ai/x/insights: any folder, by a name meant to be a user's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".jenova-ai" / "elsewhere" / "insights").mkdir(parents=True)
    with pytest.raises(UnsafePathError):
        resolve_roots(user="../elsewhere")
    proc = run_cli("prepare", "--user", "../elsewhere", "--output", tmp_path / "o.jsonl",
                   env={"HOME": str(tmp_path)})
    assert proc.returncode == 2 and "not a user name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_cpa_user_traversal_is_refused(tmp_path):
    """`cpa observe --user ../../../x` wrote its state to ~/.jenova-ai/users/../../../x/.cpa_state."""
    home = tmp_path / "home"
    home.mkdir()
    history = _history(tmp_path / "h.jsonl")
    before = _tree(tmp_path)
    proc = _cpa("observe", "--user", "../../../escaped", "--history", history, home=home)
    assert proc.returncode == 2 and "not a user name" in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(tmp_path) - before == set()


def test_topics_never_become_paths(impl, tmp_path):
    """Insight topics and CPA themes are data: a topic `../../x` writes no file anywhere."""
    store = tmp_path / "store"
    store.mkdir()
    for i, topic in enumerate(["../../escaped", "/tmp/escaped", "..", "a/../../b"]):
        (store / f"{i}.json").write_text(json.dumps({"content": f"c{i}", "topic": topic}), encoding="utf-8")
    before = _tree(tmp_path)
    proc = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "out" / "train.jsonl", "--quiet")
    assert proc.returncode == 0, proc.stderr
    cpa = _cpa("observe", "--state-dir", tmp_path / "state", "--insights", store, home=tmp_path,
               pure=impl == "pure")
    assert cpa.returncode == 0, cpa.stderr
    new = {p.split("/")[0] for p in _tree(tmp_path) - before}
    assert new == {"out", "state"}
    assert not Path("/tmp/escaped").exists()


def test_cpa_library_user_traversal_is_refused(tmp_path, monkeypatch):
    from jenova_fast.cpa.accelerator import CPA
    from jenova_fast.cpa.state import default_state_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("..", "../x", "a/b"):
        with pytest.raises(UnsafePathError):
            default_state_dir(name)
        with pytest.raises(UnsafePathError):
            CPA(user=name)
    monkeypatch.setenv("USER", "../../escaped")  # getpass reads it first
    monkeypatch.setenv("LOGNAME", "../../escaped")
    with pytest.raises(UnsafePathError):
        default_state_dir()
    assert not (tmp_path / "escaped").exists()


def test_lock_file_is_never_opened_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "lock").symlink_to(victim)
    proc = _cpa("observe", "--state-dir", state, "--history", _history(tmp_path / "h.jsonl"), home=tmp_path)
    assert proc.returncode == 2 and "lock" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert victim.read_bytes() == b"precious\n" and not (state / "state.npz").exists()


def test_world_writable_state_dir_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UnsafePathError, match="writable by every user"):
        private_dir(state, "CPA state dir", "--state-dir")
    proc = _cpa("observe", "--state-dir", state, "--history", _history(tmp_path / "h.jsonl"), home=tmp_path,
                pure=False)
    assert proc.returncode == 2 and "chmod o-w" in proc.stderr and "Traceback" not in proc.stderr
    assert list(state.iterdir()) == []  # checked before the lock, the state or the Numba cache


@as_root
def test_state_dir_of_another_user_is_refused(tmp_path):
    """Numba loads its cache index from the state dir with pickle: a dir another user owns is theirs to fill."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, NOBODY, NOBODY)
    proc = _cpa("observe", "--state-dir", state, "--history", _history(tmp_path / "h.jsonl"), home=tmp_path,
                pure=False)
    assert proc.returncode == 2 and "belongs to another user" in proc.stderr, proc.stderr
    assert list(state.iterdir()) == []  # checked before the lock, the state or the Numba cache


@as_root
def test_state_dir_symlink_of_another_user_is_refused(tmp_path):
    target = tmp_path / "mine"
    target.mkdir(mode=0o700)
    link = tmp_path / "state"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match="symlink owned by another user"):
        private_dir(link, "CPA state dir", "--state-dir")
    proc = _cpa("observe", "--state-dir", link, "--history", _history(tmp_path / "h.jsonl"), home=tmp_path,
                pure=False)
    assert proc.returncode == 2 and "symlink owned by another user" in proc.stderr, proc.stderr


def test_new_state_dir_is_private(tmp_path):
    assert stat.S_IMODE(private_dir(tmp_path / "a" / "state", "CPA state dir", "--state-dir").stat().st_mode) == 0o700


def test_compile_history_is_not_appended_through_a_symlink(tmp_path):
    """compile_history.jsonl was opened O_APPEND|O_CREAT through any symlink: a link planted in the state dir
    had the CPA append a JSON line to the file it names (a ~/.bashrc)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "compile_history.jsonl").symlink_to(victim)
    proc = _cpa("observe", "--state-dir", state, "--history", _history(tmp_path / "h.jsonl"), home=tmp_path,
                pure=False)
    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert "Traceback" not in proc.stderr
    if proc.returncode != 0:  # the kernels were compiled: the link was refused, in one line
        assert proc.returncode == 2 and "compile_history.jsonl" in proc.stderr, proc.stderr


def test_files_created_are_not_writable_by_others(tmp_path):
    """Under a umask of 022: the prepare output and report follow it (0644); the CPA's state, lock and compile
    history are private (0600) whatever the umask, in a 0700 state dir."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text(json.dumps({"content": "c"}), encoding="utf-8")
    proc = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "out" / "train.jsonl", "--quiet",
                   "--report", tmp_path / "out" / "report.json", preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr
    cpa = _cpa("observe", "--state-dir", tmp_path / "state", "--history", _history(tmp_path / "h.jsonl"),
               home=tmp_path, pure=False)
    assert cpa.returncode == 0, cpa.stderr
    created = [tmp_path / "out", *(tmp_path / "out").iterdir(), tmp_path / "state", *(tmp_path / "state").rglob("*")]
    for path in created:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not mode & stat.S_IWOTH and not mode & stat.S_IWGRP, (path, oct(mode))
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "numba_cache").stat().st_mode) == 0o700
    for name in ("state.npz", "lock", "compile_history.jsonl"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600, name


def test_outputs_replace_a_planted_symlink_and_never_write_through_it(tmp_path):
    """train.jsonl, its report and an installed model are renamed into place: a symlink planted at the
    target (or at jenova.prev.gguf) is replaced, the file it names is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text(json.dumps({"content": "c"}), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.jsonl", "report.json"):
        (out / name).symlink_to(victim)
    proc = run_cli("prepare", "--insights-dir", store, "--output", out / "train.jsonl", "--quiet",
                   "--report", out / "report.json")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == b"precious\n"
    assert not (out / "train.jsonl").is_symlink() and not (out / "report.json").is_symlink()

    from jenova_fast.finetune.install import install_model

    models = tmp_path / "models"
    models.mkdir()
    (models / "jenova.gguf").symlink_to(victim)
    (models / "jenova.prev.gguf").symlink_to(victim)
    for n in range(2):
        candidate = tmp_path / f"candidate{n}.gguf"
        candidate.write_bytes(b"GGUF model %d" % n)
        install_model(candidate, models / "jenova.gguf", validate=False)
        assert victim.read_bytes() == b"precious\n"
    assert (models / "jenova.gguf").read_bytes() == b"GGUF model 1"
    assert not (models / "jenova.gguf").is_symlink()
    assert not (models / "jenova.prev.gguf").is_symlink()
    assert (models / "jenova.prev.gguf").read_bytes() == b"GGUF model 0"


def test_a_hostile_chat_template_is_a_one_line_error(tmp_path):
    """--format text renders the chat template a GGUF carries: data from a downloaded file. llama-cpp-python
    renders it in Jinja's sandbox (>= 0.2.72, CVE-2024-34359), which refuses `__class__`; the refusal was a
    SecurityError traceback, now one line naming the model, exit 2, no output."""
    pytest.importorskip("llama_cpp", reason="the finetune extra (llama-cpp-python) is not installed")
    from jenova_fast.finetune.tiny_model import write_tiny_model

    model = write_tiny_model(tmp_path / "evil.gguf", chat_template=(
        "{% for m in messages %}{{ m.content.__class__.__mro__[1].__subclasses__() }}{% endfor %}"))
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text(json.dumps({"content": "c"}), encoding="utf-8")
    proc = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl", "--format", "text",
                   "--template-from", model)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "SecurityError" in proc.stderr and str(model) in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("where", ["gguf", "file"])
def test_a_chat_template_with_a_syntax_error_is_a_one_line_error_in_finetune(tmp_path, where):
    """The same data given to `finetune`: a template Jinja cannot compile (from the base or --template FILE)
    was a TemplateSyntaxError traceback; now one line naming where it came from and --template, exit 1."""
    pytest.importorskip("llama_cpp", reason="the finetune extra (llama-cpp-python) is not installed")
    from jenova_fast.finetune.tiny_model import write_tiny_model
    from tests.finetune.conftest import chat_records, write_jsonl

    broken = "{% for m in messages %}{{ m.content }\n{% endfor %}"
    model = write_tiny_model(tmp_path / "base.gguf", chat_template=broken if where == "gguf" else None)
    extra = []
    if where == "file":
        (tmp_path / "t.jinja").write_text(broken, encoding="utf-8")
        extra = ["--template", tmp_path / "t.jinja"]
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(20))
    proc = run_cli("finetune", "--base", model, "--data", data, "--out", tmp_path / "out.gguf", "--quiet", *extra)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    source = f"{model}: its tokenizer.chat_template" if where == "gguf" else f"--template {tmp_path / 't.jinja'}"
    assert line.startswith(f"finetune: error: {source} is not a valid Jinja template (TemplateSyntaxError at line 1")
    assert "--template NAME" in line
    assert not (tmp_path / "out.gguf").exists()
