"""A real Dask LocalCluster (2 worker processes of 1 thread, each offering trainer=1), tiny stores, the tiny model.

The cluster tests are skipped, with the reason, where the `fleet` or `finetune` extra is not installed; CI
installs both. The fingerprint, ledger and missing-Dask tests need neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jenova_fast.fleet import FleetOptions, open_client
from jenova_fast.fleet.demo import write_fleet


def need_cluster_extras() -> None:
    pytest.importorskip("distributed", reason="the fleet's cluster tests need the fleet extra: "
                                              "pip install 'jenova-fast[fleet]'")
    pytest.importorskip("llama_cpp", reason="the fleet's cluster tests train: pip install 'jenova-fast[finetune]'")
    pytest.importorskip("gguf", reason="the fleet's cluster tests train: pip install 'jenova-fast[finetune]'")

INSIGHTS = 10  # per user: about 25 training steps of the tiny model, a second or two
SETTINGS: dict[str, Any] = {"n_ctx": 256, "lr": 2e-3, "epochs": 1, "eval_fraction": 0.1}


@pytest.fixture(scope="session")
def fleet_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_cluster_extras()
    from jenova_fast.finetune.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("fleet-base") / "tiny-base.gguf")


@pytest.fixture(scope="session")
def options(fleet_base: Path) -> FleetOptions:
    return FleetOptions(base=fleet_base, **SETTINGS)


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """Two worker processes, as a 2-core CI machine runs them; shared by every test of the session."""
    need_cluster_extras()
    with open_client(workers=2, threads_per_worker=1, dashboard=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def make_fleet(root: Path, users: int = 4, insights: int = INSIGHTS) -> list[str]:
    return write_fleet(root, users, insights, model=False)
