"""The product's bundle converges whatever the order of the machines' hooks: three seeds.

Deployed with ``--seed`` the lab runs the machines in lockstep rounds whose order the seed
draws (``lab.runner``), so each seed is another interleaving of the same hooks: of the
bootstrap, the join-token issue and the joins, the subordinates' objects. Each of three
seeds deploys ``bundles/lxd-cluster.yaml`` with the lab overlay on fresh machines; every
one must end with every unit active and 3 ONLINE members. A seed that fails is named in
the test id, and ``lab deploy --seed N`` repeats its order.
"""

from __future__ import annotations

import pytest

from .operator import BUNDLE, OVERLAY, lab, leader, members, model_root, subordinates, units

SEEDS = (11, 22, 33)
TIMEOUT = "600"


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed-{s}" for s in SEEDS])
def test_the_bundle_converges_in_the_order_of_any_seed(seed: int):
    with model_root(f"lab-seed-{seed}-") as root:
        done = lab(root, "deploy", BUNDLE, "--overlay", OVERLAY, "--seed", str(seed))
        assert f"seed {seed} (lab deploy --seed {seed} repeats it)" in done.stdout

        found = units(root)
        for app in ("ovn-bridge", "ceph-link"):
            found.update(subordinates(root, app))
        assert len(found) == 9, sorted(found)
        not_active = {
            name: unit["workload-status"]
            for name, unit in found.items()
            if unit["workload-status"]["current"] != "active"
        }
        assert not not_active, (seed, not_active)
        assert members(root, leader(root)) == {
            "lxd-0": "ONLINE",
            "lxd-1": "ONLINE",
            "lxd-2": "ONLINE",
        }
