"""The benchmark's inputs: the product bundle as both of its paths deploy it (no daemons).

``benchmarks/deploy.py`` is a script, not a test (it takes minutes and prints figures), but
what it reads must keep working: the bundle with the lab overlay, and what ovn-bridge's and
ceph-link's own code make of their options (``plain.py derive``, which the plain path uses
instead of parsing options itself). A broken overlay path or a renamed charm function fails
here, not in the next measurement.
"""

from __future__ import annotations

from benchmarks import plain
from benchmarks.deploy import EndState, Product


def test_the_plain_path_gets_the_charms_objects_for_the_bundle():
    product = Product.load()

    settings = product.settings
    objects = {(entity, data["name"]): data for entity, data in settings.objects}
    assert list(objects) == [
        ("network", "UPLINK"),
        ("network", "default"),
        ("storage-pool", "remote"),
    ]
    assert objects[("network", "UPLINK")]["member-config"] == {"parent": "br-uplink"}
    assert objects[("network", "default")]["config"]["network"] == "UPLINK"
    assert objects[("storage-pool", "remote")]["config"]["ceph.user.name"] == "ceph-link"
    assert settings.datapath_type == "netdev"  # the lab overlay's: no kernel datapath here
    assert settings.pools == [["remote", 3, None]]
    assert product.end_state(5) == EndState(members=5, central=3, pools=("remote",))
    assert product.end_state(1).central == 1


def test_objects_decode_as_lxd_gets_them():
    settings = Product.load().settings

    decoded = settings.lxd_objects()

    assert [(entity, obj.name, obj.kind) for entity, obj in decoded] == [
        ("network", "UPLINK", "physical"),
        ("network", "default", "ovn"),
        ("storage-pool", "remote", "ceph"),
    ]


def test_an_unknown_step_is_refused(capsys):
    assert plain.main(["bogus"]) == 2
    assert "usage: plain.py" in capsys.readouterr().err
