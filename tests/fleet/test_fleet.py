"""The fleet on a real LocalCluster (2 worker processes), real stores, real llama.cpp training of the tiny model:
the same results as the chain run by hand, fresh users skipped, a bad user failing alone, a worker killed
mid-training."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import SETTINGS, make_fleet, need_cluster_extras

need_cluster_extras()

from jenova_fast.cpa import CPA  # noqa: E402
from jenova_fast.cpa.cli import main as cpa_main  # noqa: E402
from jenova_fast.finetune import FinetuneConfig, finetune  # noqa: E402
from jenova_fast.fleet import UserPaths, run_fleet  # noqa: E402
from jenova_fast.fleet.cli import main as fleet_main  # noqa: E402
from jenova_fast.fleet.demo import write_user_store  # noqa: E402
from jenova_fast.prepare import prepare  # noqa: E402


def tensors(path: Path) -> dict[str, bytes]:
    import gguf

    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


TEMP_NAME = re.compile(r"\.jenova-tmp$|\.tmp$|^\.finetune-|\.(new|prev|cur)\d+$|^fleet-stage$")


def leftovers(root: Path) -> list[str]:
    """Temp files and folders of any writer, and the fleet's stage: none may outlive a run."""
    found = []
    for directory, dirnames, filenames in os.walk(root):
        found += [os.path.join(directory, n) for n in dirnames + filenames if TEMP_NAME.search(n)]
    return found


def assert_clean(root: Path, users: list[str]) -> None:
    assert leftovers(root) == []
    for user in users:
        paths = UserPaths(root, user)
        assert {p.name for p in paths.models_dir.iterdir()} <= {"jenova.gguf", "jenova.prev.gguf", "jenova.fleet.json"}
        assert sorted(p.name for p in paths.finetune_dir.iterdir()) == ["jenova.report.json", "train.jsonl"]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory, client: Any, options: Any) -> tuple[Path, list[str], Any]:
    root = tmp_path_factory.mktemp("fleet")
    users = make_fleet(root)
    return root, users, run_fleet(client, root, users, options)


def test_the_fleet_gives_what_the_chain_run_by_hand_gives(fleet_run, options, tmp_path):
    root, users, report = fleet_run
    assert report.counts() == {"installed": 4, "skipped": 0, "failed": 0}, [o.line() for o in report.users]
    assert len(report.workers) == 2
    base = tensors(options.base)
    for outcome in report.users:
        paths, hand = UserPaths(root, outcome.user), tmp_path / outcome.user
        assert outcome.threads == 1  # a worker's threads: its one core
        # prepare: byte for byte
        prepare(paths.store, hand / "train.jsonl", threads=1)
        assert paths.train.read_bytes() == (hand / "train.jsonl").read_bytes()
        # observe: the same themes, counted once
        assert cpa_main(["observe", "--insights", str(paths.store), "--state-dir", str(hand / "cpa")]) == 0
        assert CPA(paths.cpa_state).state.themes == CPA(hand / "cpa").state.themes
        # finetune: the same tensors trained to the same values
        finetune(FinetuneConfig(base=options.base, data=hand / "train.jsonl", out=hand / "jenova.gguf", threads=1,
                                report=hand / "report.json", **SETTINGS))
        installed, by_hand = tensors(paths.installed), tensors(hand / "jenova.gguf")
        assert installed == by_hand
        assert {n for n in base if base[n] != installed[n]} == set(json.loads(
            (hand / "report.json").read_text())["trained_tensors"])
        assert outcome.outcome == "installed" and outcome.model == str(paths.installed) and outcome.previous is None
        assert outcome.records == 10 and outcome.observed == 10 and outcome.steps and outcome.steps > 0
        assert outcome.heldout_loss_after < outcome.heldout_loss_before
    assert_clean(root, users)


def test_fresh_users_are_skipped_a_changed_one_retrains_and_force_retrains(fleet_run, client, options):
    root, users, _ = fleet_run
    again = run_fleet(client, root, users, options)
    assert again.counts() == {"installed": 0, "skipped": 4, "failed": 0}

    # one more insight for one user: that user alone is retrained, the CPA counts only the new insight,
    # and the model it replaces is kept for a rollback
    changed = UserPaths(root, users[1])
    old_model = changed.installed.read_bytes()
    extra = write_user_store(root / "extra", users[1], 1, seed=7)
    new_file = next(extra.rglob("*.json"))
    os.replace(new_file, changed.store / "new-insight.json")
    third = run_fleet(client, root, users, options)
    assert third.counts() == {"installed": 1, "skipped": 3, "failed": 0}
    outcome = next(o for o in third.users if o.outcome == "installed")
    assert outcome.user == users[1] and outcome.records == 11 and outcome.observed == 1
    assert outcome.previous is not None and Path(outcome.previous).read_bytes() == old_model
    assert CPA(changed.cpa_state).state.themes != {}

    # --force retrains a fresh user (the same data: the same model, installed once) and counts nothing twice
    forced = run_fleet(client, root, users[:1], options, force=True)
    (outcome,) = forced.users
    assert outcome.outcome == "installed" and not outcome.candidate_reused and outcome.steps and outcome.steps > 0
    assert outcome.observed == 0
    assert run_fleet(client, root, users, options).counts()["skipped"] == 4
    assert_clean(root, users)


def test_a_bad_user_fails_alone(tmp_path, client, options, capsys):
    root = tmp_path / "root"
    good = make_fleet(root, users=2)
    broken = root / "users" / "mallory" / "insights" / "notes"
    broken.mkdir(parents=True)
    for i in range(3):  # files prepare skips: invalid JSON, no content
        (broken / f"insight_{i}.json").write_text('{"topic": "x", "content": ' if i else '{"topic": "x"}')
    write_user_store(root, "tim", 1)  # one insight: too few tokens to train on
    report_path = tmp_path / "fleet.json"
    rc = fleet_main(["--root", str(root), "--base", str(options.base), "--scheduler", client.scheduler.address,
                     "--ctx", "256", "--lr", "2e-3", "--epochs", "1", "--eval-fraction", "0.1",
                     "--report", str(report_path)])
    out, err = capsys.readouterr()
    assert rc == 1
    report = json.loads(report_path.read_text())
    by_user = {u["user"]: u for u in report["users"]}
    assert report["counts"] == {"installed": 2, "skipped": 0, "failed": 2}
    for user in good:
        assert by_user[user]["outcome"] == "installed" and Path(by_user[user]["model"]).is_file()
    mallory, tim = by_user["mallory"], by_user["tim"]
    assert mallory["outcome"] == "failed" and mallory["stage"] == "prepare"
    assert str(root / "users" / "mallory" / "insights") in mallory["error"] and "no usable insight" in mallory["error"]
    assert tim["outcome"] == "failed" and tim["stage"] == "finetune"
    assert not (root / "users" / "mallory" / "models" / "jenova.gguf").exists()
    assert not (root / "users" / "tim" / "models" / "jenova.gguf").exists()
    assert "fleet: 4 user(s): 2 installed, 0 skipped (fresh), 2 failed" in out
    assert "fleet: error: mallory failed in prepare:" in err and "fleet: error: tim failed in finetune:" in err
    assert leftovers(root) == []


def test_a_worker_killed_mid_training_still_ends_with_every_model_installed(tmp_path, client, options):
    root = tmp_path / "root"
    users = make_fleet(root)
    killed: list[tuple[str, int]] = []

    def kill_the_first_trainer(user: str, state: str, info: dict[str, Any]) -> None:
        if state == "training" and not killed and info.get("pid"):
            killed.append((user, info["pid"]))
            threading.Timer(0.3, os.kill, (info["pid"], signal.SIGKILL)).start()

    report = run_fleet(client, root, users, options, on_state=kill_the_first_trainer)
    assert killed
    assert report.counts() == {"installed": 4, "skipped": 0, "failed": 0}, [o.line() for o in report.users]
    victim = next(o for o in report.users if o.user == killed[0][0])
    assert victim.attempts["training"] >= 2  # Dask ran the killed task again
    for user in users:
        paths = UserPaths(root, user)
        assert CPA(paths.cpa_state).state.themes  # observed once
        assert sum(m for _, _, m in CPA(paths.cpa_state).state.themes.values()) == 10  # ... and only once
    assert_clean(root, users)
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker in place of the killed one


def test_settings_left_out_are_chosen_from_each_users_data(tmp_path, fleet_base):
    """Without --epochs, --lr, --ctx and --eval-fraction, each user's training chooses them from that user's data,
    as `jenova-fast finetune` does with no flags: the same plan, the same steps."""
    from jenova_fast.fleet import FleetOptions, base_identity
    from jenova_fast.fleet.chain import run_chain

    users = make_fleet(tmp_path, users=1)
    paths = UserPaths(tmp_path, users[0])
    trained = run_chain(paths, FleetOptions(base=fleet_base), base_identity(fleet_base))[2]
    fleet_report = json.loads(paths.finetune_report.read_text(encoding="utf-8"))
    by_hand = finetune(FinetuneConfig(base=fleet_base, data=paths.train, out=tmp_path / "by-hand.gguf",
                                      report=tmp_path / "by-hand.json"))
    assert {"ctx", "epochs", "lr", "heldout"} <= set(fleet_report["choices"])
    chosen = ("ctx", "epochs", "lr", "heldout", "packing")  # not "train": it names the memory free at the time
    assert [fleet_report["choices"][k] for k in chosen] == [by_hand.choices[k] for k in chosen]
    assert trained.steps == by_hand.steps > 0
