"""The layers of docs/architecture.md: prepare, cpa and finetune import none of each other; only the CLIs
(and the fleet) wire them together. Checked in a fresh interpreter, where nothing else is loaded yet."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PACKAGES = ("prepare", "cpa", "finetune")


def loaded_packages(module: str) -> set[str]:
    code = (f"import sys, json, {module}; "
            "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('jenova_fast.')})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out)) & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_core_package_imports_no_other(package):
    assert loaded_packages(f"jenova_fast.{package}") == {package}


def test_the_top_level_api_loads_prepare_on_first_use():
    assert loaded_packages("jenova_fast") == set()
    code = ("import jenova_fast\ntry: jenova_fast.prepare('no-such-store', 'o.jsonl')\n"
            "except jenova_fast.prepare.StoreNotFoundError as e: print(e)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("insight store no-such-store does not exist")


def test_prepare_starts_without_numpy():
    """A whole prepare run can take under a second: its start-up must not pay for numpy (or Numba)."""
    code = "import sys, jenova_fast.prepare.cli; print('numpy' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["jenova_fast.engine", "jenova_fast.engine.cli", "jenova_fast.engine.gradcheck"])
def test_the_engine_sits_below_finetune(module):
    """finetune trains on an engine; the engine knows nothing of finetune (nor of prepare and the CPA)."""
    assert loaded_packages(module) == set()
