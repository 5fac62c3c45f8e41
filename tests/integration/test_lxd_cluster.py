"""Deploy bundles/lxd-cluster.yaml on a real Juju controller and check the LXD cluster forms.

Skipped (see conftest.py) when there is no juju CLI or no controller.

Environment knobs:
    LAB_LXD_CHARM: path of an already packed lxd .charm (skips scripts/stage-charm --pack).
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


@pytest.fixture(scope="module")
def lxd_charm() -> Path:
    """Packed lxd charm: stage it with the shared code and run charmcraft pack."""
    prebuilt = os.environ.get("LAB_LXD_CHARM")
    if prebuilt:
        return Path(prebuilt).resolve()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "stage-charm"), "lxd", "--pack"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"stage-charm --pack failed:\n{result.stderr}"
    charms = [Path(line) for line in result.stdout.splitlines() if line.endswith(".charm")]
    assert charms, f"stage-charm --pack printed no .charm path:\n{result.stdout}"
    return charms[-1]


@pytest.fixture(scope="module")
def juju() -> Iterator[jubilant.Juju]:
    """A temporary Juju model, destroyed afterwards unless LAB_KEEP_MODEL is set."""
    with jubilant.temp_model(keep=bool(os.environ.get("LAB_KEEP_MODEL"))) as juju:
        juju.wait_timeout = DEPLOY_TIMEOUT
        yield juju


def local_bundle(charm: Path, dest: Path) -> Path:
    """Write a copy of the lxd-cluster bundle whose lxd charm is the packed ``charm``."""
    bundle = yaml.safe_load(BUNDLE.read_text())
    bundle["applications"]["lxd"]["charm"] = str(charm)
    dest.write_text(yaml.safe_dump(bundle, sort_keys=False))
    return dest


def test_lxd_cluster_forms(juju: jubilant.Juju, lxd_charm: Path, tmp_path: Path) -> None:
    bundle = local_bundle(lxd_charm, tmp_path / "lxd-cluster.yaml")

    juju.deploy(bundle)
    juju.wait(jubilant.all_active, error=jubilant.any_error, timeout=DEPLOY_TIMEOUT)

    task = juju.exec("lxc", "cluster", "list", "--format", "csv", unit="lxd/0")
    # csv module: the roles column can span several lines inside one quoted field.
    members = [row for row in csv.reader(io.StringIO(task.stdout)) if row]
    online = [row for row in members if "ONLINE" in row]
    assert len(members) == 3, f"expected 3 cluster members:\n{task.stdout}"
    assert len(online) == 3, f"expected 3 ONLINE members:\n{task.stdout}"
