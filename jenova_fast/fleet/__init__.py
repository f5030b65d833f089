"""The fleet: every user's prepare -> CPA observe -> finetune -> install chain, on a Dask cluster.

Needs the `fleet` extra (`pip install 'jenova-fast[fleet]'`: dask and distributed); importing this package
does not, so the error that names the extra comes only when a cluster is asked for.

- `run_fleet(client, root, users, FleetOptions(base=...), force=False) -> FleetReport`
- `open_client(scheduler=None, workers=None)`: a LocalCluster of trainer workers, or a running scheduler.
- `chain.prepare_user / observe_user / finetune_user / install_user`: the tasks, runnable by hand.
"""

from __future__ import annotations

from jenova_fast.fleet.chain import Installed, Observed, Prepared, Trained, run_chain
from jenova_fast.fleet.cluster import INSTALL_HINT, open_client, require_dask
from jenova_fast.fleet.plan import (
    BaseIdentity,
    FleetError,
    FleetOptions,
    StoreFingerprint,
    UserPaths,
    base_identity,
    fingerprint,
    is_fresh,
    list_users,
)
from jenova_fast.fleet.report import FleetReport, UserOutcome
from jenova_fast.fleet.run import run_fleet

__all__ = [
    "INSTALL_HINT",
    "BaseIdentity",
    "FleetError",
    "FleetOptions",
    "FleetReport",
    "Installed",
    "Observed",
    "Prepared",
    "StoreFingerprint",
    "Trained",
    "UserOutcome",
    "UserPaths",
    "base_identity",
    "fingerprint",
    "is_fresh",
    "list_users",
    "open_client",
    "require_dask",
    "run_chain",
    "run_fleet",
]
