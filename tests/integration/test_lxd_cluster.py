"""Deploy the built bundle on a real Juju controller and check the LXD cluster forms.

The same build the README's "Deploy on Juju" gives: ``scripts/build-charms`` writes
``build/lxd-cluster.yaml`` (bundles/lxd-cluster.yaml with ``charm:`` at the built ``.charm``
files), which this test deploys. Skipped (see conftest.py) when there is no juju CLI or no
controller. Without a Ceph provider in the model, ceph-link blocks asking for the ceph
relation and LXD forms its cluster regardless.

Environment knobs:
    LAB_KEEP_MODEL: if non-empty, keep the temporary Juju model after the test.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jubilant
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT = 45 * 60


def built_bundle() -> Path:
    """``build/lxd-cluster.yaml``, after ``scripts/build-charms`` built every charm."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-charms")],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"scripts/build-charms failed:\n{result.stderr}"
    bundle = REPO_ROOT / "build" / "lxd-cluster.yaml"
    assert bundle.is_file(), f"scripts/build-charms wrote no bundle:\n{result.stdout}"
    return bundle


@pytest.fixture(scope="module")
def juju() -> Iterator[jubilant.Juju]:
    """A temporary Juju model, destroyed afterwards unless LAB_KEEP_MODEL is set."""
    with jubilant.temp_model(keep=bool(os.environ.get("LAB_KEEP_MODEL"))) as juju:
        juju.wait_timeout = DEPLOY_TIMEOUT
        yield juju


def cluster_formed(status: jubilant.Status) -> bool:
    """The cluster formed: lxd and ovn-bridge active, ceph-link blocked for lack of Ceph."""
    return jubilant.all_active(status, "lxd", "ovn-bridge") and all(
        unit.workload_status.current == "blocked"
        and "needs the ceph relation" in unit.workload_status.message
        for unit in status.get_units("ceph-link").values()
    )


def test_lxd_cluster_forms(juju: jubilant.Juju) -> None:
    bundle = built_bundle()

    juju.deploy(bundle)
    juju.wait(cluster_formed, error=jubilant.any_error, timeout=DEPLOY_TIMEOUT)

    task = juju.exec("lxc", "cluster", "list", "--format", "csv", unit="lxd/0")
    # csv module: the roles column can span several lines inside one quoted field.
    members = [row for row in csv.reader(io.StringIO(task.stdout)) if row]
    online = [row for row in members if "ONLINE" in row]
    assert len(members) == 3, f"expected 3 cluster members:\n{task.stdout}"
    assert len(online) == 3, f"expected 3 ONLINE members:\n{task.stdout}"
