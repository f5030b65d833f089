"""Fingerprints and freshness, the observe ledger (an insight is counted once, whatever dies when), and the error
naming the extra when Dask is missing. No cluster, no training: these run without the fleet extra too."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jenova_fast.cpa import CPA
from jenova_fast.fleet import FleetOptions, UserPaths, base_identity, fingerprint, is_fresh
from jenova_fast.fleet.chain import _themes_digest, finetune_config, observe_user
from jenova_fast.fleet.demo import write_user_store
from jenova_fast.fleet.plan import FLEET_SCHEMA, model_stamp


@pytest.fixture
def user(tmp_path: Path) -> UserPaths:
    write_user_store(tmp_path, "alice", 6)
    return UserPaths(tmp_path, "alice")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def test_the_fingerprint_follows_the_store_the_base_and_the_options(user, base, tmp_path):
    options = FleetOptions(base=base, lr=2e-3)
    first = fingerprint(user, base_identity(base), options)
    assert first.files == 6
    assert fingerprint(user, base_identity(base), options) == first
    # how fast or where it runs is not what is trained
    assert fingerprint(user, base_identity(base), dataclasses.replace(options, threads=7, max_memory=1 << 30)) == first
    # nor is recomputing activations: the same weights, less memory; it reaches each user's training
    recomputing = dataclasses.replace(options, gradient_checkpointing=True)
    assert fingerprint(user, base_identity(base), recomputing) == first
    assert finetune_config(user, recomputing, None, None).gradient_checkpointing
    (user.store / ".hidden.json").write_text("{}")  # prepare never reads hidden files
    (user.store / "notes.txt").write_text("x")
    assert fingerprint(user, base_identity(base), options) == first

    assert fingerprint(user, base_identity(base), dataclasses.replace(options, lr=1e-3)) != first
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(59) + b"\1")
    assert fingerprint(user, base_identity(other), options) != first
    some = next(user.store.rglob("insight_*.json"))
    st = some.stat()
    os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # an insight rewritten
    touched = fingerprint(user, base_identity(base), options)
    assert touched != first
    (user.store / "sleep").mkdir(exist_ok=True)
    (user.store / "sleep" / "insight_new.json").write_text('{"topic": "sleep", "content": "more"}')
    assert fingerprint(user, base_identity(base), options) not in (first, touched)


def test_fresh_means_this_fingerprint_and_still_the_same_installed_file(user, base):
    current = fingerprint(user, base_identity(base), FleetOptions(base=base))
    assert not is_fresh(user, current)  # nothing installed
    user.models_dir.mkdir(parents=True)
    user.installed.write_bytes(b"model one")
    user.fingerprint_file.write_text(json.dumps({"schema": FLEET_SCHEMA, "fingerprint": current.digest,
                                                 "model": model_stamp(user.installed)}))
    assert is_fresh(user, current)
    # a rollback (or a manual install) puts another file there: stale, the fleet retrains
    (user.models_dir / "jenova.prev.gguf").write_bytes(b"model zero")
    os.replace(user.models_dir / "jenova.prev.gguf", user.installed)
    assert not is_fresh(user, current)


def _mentions(paths: UserPaths) -> int:
    return int(sum(count for _, _, count in CPA(paths.cpa_state).state.themes.values()))


def test_observe_counts_each_insight_once(user):
    assert observe_user(user).observed == 6 and _mentions(user) == 6
    again = observe_user(user)
    assert (again.observed, again.known) == (0, 6) and _mentions(user) == 6
    write_user_store(user.root / "more", "alice", 1, seed=3)
    new = next((user.root / "more").rglob("*.json"))
    os.replace(new, user.store / "new.json")
    assert observe_user(user).observed == 1 and _mentions(user) == 7


def test_a_count_saved_before_its_task_died_is_not_counted_again(user):
    observe_user(user)
    themes = CPA(user.cpa_state).state.themes
    state = CPA(user.cpa_state).state
    # the ledger as a task leaves it when it dies after the CPA saved its count but before the ledger said so
    ledger = json.loads(user.ledger.read_text())
    user.ledger.write_text(json.dumps({"schema": FLEET_SCHEMA, "observed": [], "pending": {
        "generation": state.generation, "themes": _themes_digest(state.themes), "add": ledger["observed"]}}))
    assert observe_user(user).observed == 0
    assert CPA(user.cpa_state).state.themes == themes


def test_a_count_that_died_before_its_save_is_counted(user):
    observe_user(user)
    state = CPA(user.cpa_state).state
    ledger = json.loads(user.ledger.read_text())
    lost = ledger["observed"][:2]  # their count never reached the state: its generation is older
    user.ledger.write_text(json.dumps({"schema": FLEET_SCHEMA, "observed": ledger["observed"][2:], "pending": {
        "generation": state.generation + 1, "themes": "not saved", "add": lost}}))
    assert observe_user(user).observed == 2


def test_without_dask_the_error_names_the_extra(user, base):
    code = ("import sys; sys.modules['distributed'] = None; from jenova_fast.fleet.cli import main; "
            f"sys.exit(main(['--root', {str(user.root)!r}, '--base', {str(base)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "fleet: error: the fleet runs on Dask" in done.stderr
    assert "pip install 'jenova-fast[fleet]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_new_state_in_place_of_the_counted_one_is_counted_anew(user):
    observe_user(user)
    observe_user(user)  # generation 2
    (user.cpa_state / "state.npz").unlink()  # as when a damaged state is moved aside: a fresh one, generation 0
    assert observe_user(user).observed == 6 and _mentions(user) == 6
