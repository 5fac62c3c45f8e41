"""Deploy bundles/lxd-cluster.yaml on a real Juju controller and check the LXD cluster forms.

Skipped (see conftest.py) when there is no juju CLI or no controller. Without a Ceph
provider in the model, ceph-link blocks asking for the ceph relation and LXD forms its
cluster regardless.

Environment knobs:
    LAB_<APP>_CHARM (e.g. LAB_LXD_CHARM, LAB_OVN_BRIDGE_CHARM): an already packed .charm
        for that application (skips scripts/stage-charm --pack for it).
    LAB_KEEP_MODEL: if non-empty, keep the temporary Juju model after the test.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jubilant
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "lxd-cluster.yaml"
DEPLOY_TIMEOUT = 45 * 60


def packed_charm(app: str) -> Path:
    """``app``'s packed charm: staged with the shared code, then ``charmcraft pack``."""
    prebuilt = os.environ.get(f"LAB_{app.upper().replace('-', '_')}_CHARM")
    if prebuilt:
        return Path(prebuilt).resolve()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "stage-charm"), app, "--pack"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"stage-charm {app} --pack failed:\n{result.stderr}"
    charms = [Path(line) for line in result.stdout.splitlines() if line.endswith(".charm")]
    assert charms, f"stage-charm --pack printed no .charm path:\n{result.stdout}"
    return charms[-1]


@pytest.fixture(scope="module")
def juju() -> Iterator[jubilant.Juju]:
    """A temporary Juju model, destroyed afterwards unless LAB_KEEP_MODEL is set."""
    with jubilant.temp_model(keep=bool(os.environ.get("LAB_KEEP_MODEL"))) as juju:
        juju.wait_timeout = DEPLOY_TIMEOUT
        yield juju


def local_bundle(dest: Path) -> Path:
    """Write a copy of the lxd-cluster bundle whose local charms are packed ``.charm`` files."""
    bundle = yaml.safe_load(BUNDLE.read_text())
    for app, spec in bundle["applications"].items():
        if str(spec["charm"]).startswith("."):
            spec["charm"] = str(packed_charm(app))
    dest.write_text(yaml.safe_dump(bundle, sort_keys=False))
    return dest


def cluster_formed(status: jubilant.Status) -> bool:
    """The cluster formed: lxd and ovn-bridge active, ceph-link blocked for lack of Ceph."""
    return jubilant.all_active(status, "lxd", "ovn-bridge") and all(
        unit.workload_status.current == "blocked"
        and "needs the ceph relation" in unit.workload_status.message
        for unit in status.get_units("ceph-link").values()
    )


def test_lxd_cluster_forms(juju: jubilant.Juju, tmp_path: Path) -> None:
    bundle = local_bundle(tmp_path / "lxd-cluster.yaml")

    juju.deploy(bundle)
    juju.wait(cluster_formed, error=jubilant.any_error, timeout=DEPLOY_TIMEOUT)

    task = juju.exec("lxc", "cluster", "list", "--format", "csv", unit="lxd/0")
    # csv module: the roles column can span several lines inside one quoted field.
    members = [row for row in csv.reader(io.StringIO(task.stdout)) if row]
    online = [row for row in members if "ONLINE" in row]
    assert len(members) == 3, f"expected 3 cluster members:\n{task.stdout}"
    assert len(online) == 3, f"expected 3 ONLINE members:\n{task.stdout}"
