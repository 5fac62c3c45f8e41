"""Day-2 operations of ``lxd.py`` / ``installer.py`` against REAL LXD daemons (Debian's 5.0.2).

One deployment for the module (three daemons on 127.0.8.2-4:8443, addresses of their own
so this module can run while another lab uses 127.0.0.x): the fixture forms the cluster
and imports the busybox image; the tests are consecutive steps on it, in file order, and
once one fails the later ones are skipped.

1. evacuate lxd-2 (mode auto) while it runs c1: ``Evacuation.moved`` names where c1 went,
   ``lxc list`` agrees, c1 keeps running with its data, lxd-2 is EVACUATED and
   ``cluster_health`` says so.
2. restore: c1 is back on lxd-2, running, and the cluster is healthy again.
3. mode stop: c1 and c2 (which has its own ``cluster.evacuate=migrate``) are stopped and
   stay on lxd-2, each instance gets its own ``cluster.evacuate`` back; a restore starts
   them in place.
4. refusal: with lxd-0 and lxd-1 evacuated, evacuating lxd-2 (auto or migrate) is refused
   and nothing changes (LXD 5.0.2 itself would stop every instance and report success).
5. a client certificate restricted to project p1, used over HTTPS (the served certificate
   pinned first): p1 is readable, the default project is refused; widening the
   restriction lets it in; untrusting it (by the fingerprint as openssl spells it) gives
   403.
6. a ``metrics`` certificate (first trusted as a client: the type change re-adds it) gets
   ``/1.0/metrics`` and nothing else.
7. a client token: a fresh client redeems it at the member that issued it and is trusted,
   restricted to p1.
8. restart keeps instances running (same pids); a daemon that cannot start (its log path
   is a directory: the lab's failure injection for rolling upgrades) fails the restart
   with LXD's own words, and undoing it brings the member back.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import warnings
from collections.abc import Iterator

import pytest
import requests
import urllib3

from charm_common import certs
from installer import InstallError
from lab import hosts as lxdhosts
from lab.hosts import Lab
from lxd import (
    Evacuation,
    EvacuationRefusedError,
    TrustedCertificate,
    certificate_fingerprint,
    fill_member_config,
    normalize_fingerprint,
    served_certificate,
)

from .checks import member_view, wait_for, wait_members
from .conftest import deployment

pytestmark = pytest.mark.ordered_steps

MEMBERS = (("lxd-0", "127.0.8.2"), ("lxd-1", "127.0.8.3"), ("lxd-2", "127.0.8.4"))
NAMES = tuple(name for name, _ in MEMBERS)
C1, C2 = "default/c1", "default/c2"
PROJECT = "p1"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A three-member cluster with the busybox image, shared by every step."""
    with deployment(MEMBERS, "lxd-day2-") as daemons:
        lxd0 = daemons["lxd-0"]
        started = time.monotonic()
        assert lxd0.lxd.bootstrap_cluster("lxd-0", lxd0.address, {}) is True
        for name in NAMES[1:]:
            token = lxd0.lxd.issue_join_token(name)
            config = fill_member_config(lxd0.lxd.member_config(), {})
            host = daemons[name]
            assert host.lxd.join_cluster(token, name, host.address, config) is True
        image = lxdhosts.build_busybox_image(daemons.path("busybox.tar.gz"))
        lxdhosts.import_image(lxd0, image)
        lxd0.lxc("project", "create", PROJECT)
        print(f"\n[day2] cluster formed, image imported in {time.monotonic() - started:.1f}s")
        yield daemons


# -- helpers -------------------------------------------------------------------------------


def lxc_list(lab: Lab) -> dict[str, tuple[str, str]]:
    """``name -> (STATUS, location)`` as ``lxc list`` (default project) shows it."""
    out = lab["lxd-0"].lxc("list", "--format", "csv", "-c", "nsL")
    return {n: (s, loc) for n, s, loc in (line.split(",") for line in out.splitlines())}


def local_policy(lab: Lab, name: str) -> str | None:
    """The instance's own ``cluster.evacuate`` (``None`` when it has none)."""
    config = json.loads(lab["lxd-0"].lxc("query", f"/1.0/instances/{name}"))["config"]
    return config.get("cluster.evacuate")


def init_pid(lab: Lab, name: str) -> int:
    """The instance's init PID, asked of lxd-0 (LXD forwards to the member holding it).

    Right after a member's daemon restarts, the others answer "Missing event connection
    with target cluster member" until they have reconnected to it (seen in CI): ask again.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            state = json.loads(lab["lxd-0"].lxc("query", f"/1.0/instances/{name}/state"))
        except RuntimeError as error:
            if "Missing event connection" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        return int(state["pid"])


def client_identity(lab: Lab, label: str) -> tuple[str, str, str]:
    """A new key and client certificate on disk: (cert path, key path, PEM)."""
    key, pem = certs.client_certificate(label)
    crt_path, key_path = lab.path("clients", f"{label}.crt"), lab.path("clients", f"{label}.key")
    with open(crt_path, "w") as f:
        f.write(pem)
    with open(key_path, "w") as f:
        f.write(key)
    return crt_path, key_path, pem


def https(
    lab: Lab, member: str, identity: tuple[str, str, str], path: str, **kwargs
) -> requests.Response:
    """A request to ``member``'s HTTPS API as ``identity``, once its certificate is pinned.

    ``verify=False`` only after the served certificate was checked to be the cluster's
    (LXD's certificate names no loopback address a CA check could match).
    """
    host = lab[member]
    served = certificate_fingerprint(served_certificate(host.address))
    assert served == certificate_fingerprint(host.lxd.cluster_certificate())
    method = kwargs.pop("method", "GET")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        return requests.request(
            method,
            f"https://{host.address}{path}",
            cert=identity[:2],
            verify=False,  # noqa: S501 - pinned above
            timeout=30,
            **kwargs,
        )


def status_of(lab: Lab, member: str, identity: tuple[str, str, str], path: str) -> int:
    return https(lab, member, identity, path).status_code


def openssl_fingerprint(cert_path: str) -> str:
    """``sha256 Fingerprint=AB:CD:...`` as ``openssl x509 -fingerprint -sha256`` prints it."""
    return subprocess.run(  # noqa: S603
        ["/usr/bin/openssl", "x509", "-in", cert_path, "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# -- steps ---------------------------------------------------------------------------------


def test_evacuate_auto_moves_the_running_container(lab: Lab):
    lxd0 = lab["lxd-0"]
    lxd0.lxc("launch", "busybox", "c1", "--target", "lxd-2")
    lxd0.lxc("exec", "c1", "--", "sh", "-c", "echo day2 > /root/marker")
    assert lxc_list(lab)["c1"] == ("RUNNING", "lxd-2")
    assert lxd0.lxd.cluster_health() == []

    started = time.monotonic()
    evacuation = lxd0.lxd.evacuate("lxd-2")
    print(f"evacuate (auto, 1 running container): {time.monotonic() - started:.1f}s")

    (target,) = evacuation.moved.values()
    assert evacuation == Evacuation("lxd-2", moved={C1: target}, stopped=())
    assert target in ("lxd-0", "lxd-1")
    assert lxc_list(lab)["c1"] == ("RUNNING", target)
    assert lxd0.lxc("exec", "c1", "--", "cat", "/root/marker") == "day2\n"
    assert member_view(lxd0)["lxd-2"] == "EVACUATED"
    assert lxd0.lxd.cluster_health() == [
        "member lxd-2 is EVACUATED: Unavailable due to maintenance"
    ]
    # Idempotent: nothing to do the second time.
    assert lab["lxd-1"].lxd.evacuate("lxd-2") == Evacuation("lxd-2", moved={}, already=True)


def test_restore_brings_the_container_home(lab: Lab):
    lxd1 = lab["lxd-1"].lxd

    started = time.monotonic()
    restoration = lxd1.restore("lxd-2")
    print(f"restore (1 running container): {time.monotonic() - started:.1f}s")

    assert restoration == Evacuation("lxd-2", moved={C1: "lxd-2"})
    assert lxc_list(lab)["c1"] == ("RUNNING", "lxd-2")
    assert lab["lxd-0"].lxc("exec", "c1", "--", "cat", "/root/marker") == "day2\n"
    assert member_view(lab["lxd-0"])["lxd-2"] == "ONLINE"
    assert lxd1.cluster_health() == []
    assert lxd1.restore("lxd-2").already is True


def test_evacuate_stop_keeps_the_instances_in_place(lab: Lab):
    lxd0 = lab["lxd-0"]
    lxd0.lxc("launch", "busybox", "c2", "--target", "lxd-2", "-c", "cluster.evacuate=migrate")

    evacuation = lxd0.lxd.evacuate("lxd-2", "stop")

    assert evacuation == Evacuation("lxd-2", moved={}, stopped=(C1, C2))
    listing = lxc_list(lab)
    assert listing["c1"] == listing["c2"] == ("STOPPED", "lxd-2")
    assert member_view(lxd0)["lxd-2"] == "EVACUATED"
    # The temporary policy is gone: each instance has its own back.
    assert local_policy(lab, "c1") is None
    assert local_policy(lab, "c2") == "migrate"

    restoration = lxd0.lxd.restore("lxd-2")

    assert restoration == Evacuation("lxd-2", moved={}, started=(C1, C2))
    listing = lxc_list(lab)
    assert listing["c1"] == listing["c2"] == ("RUNNING", "lxd-2")


def test_evacuation_is_refused_when_no_other_member_is_online(lab: Lab):
    lxd2 = lab["lxd-2"].lxd
    for name in ("lxd-0", "lxd-1"):  # they hold no instance: always possible
        assert lxd2.evacuate(name) == Evacuation(name, moved={})
    problems = lxd2.cluster_health()
    assert [p.split(":")[0] for p in problems] == [
        "member lxd-0 is EVACUATED",
        "member lxd-1 is EVACUATED",
    ]
    pids = {name: init_pid(lab, name) for name in ("c1", "c2")}

    for mode in ("auto", "migrate"):
        with pytest.raises(EvacuationRefusedError) as refused:
            lxd2.evacuate("lxd-2", mode)
        assert str(refused.value) == (
            "no other cluster member is online to take 2 instance(s) of lxd-2 (default/c1, "
            "default/c2); other members: lxd-0 Evacuated, lxd-1 Evacuated. Restore a member "
            "first, or evacuate with mode=stop to stop the instances in place"
        )

    # Nothing changed: same member states, same running processes, same policies.
    assert member_view(lab["lxd-2"]) == {
        "lxd-0": "EVACUATED",
        "lxd-1": "EVACUATED",
        "lxd-2": "ONLINE",
    }
    assert {name: init_pid(lab, name) for name in ("c1", "c2")} == pids
    assert local_policy(lab, "c1") is None and local_policy(lab, "c2") == "migrate"
    for name in ("lxd-0", "lxd-1"):
        assert lxd2.restore(name).already is False
    assert lxd2.cluster_health() == []


def test_client_certificate_restricted_to_a_project(lab: Lab):
    lxd0 = lab["lxd-0"].lxd
    ops = client_identity(lab, "ops")
    assert status_of(lab, "lxd-0", ops, "/1.0/instances") == 403  # not trusted yet

    fingerprint = lxd0.trust_certificate("ops", ops[2], "client", [PROJECT])

    assert fingerprint == certificate_fingerprint(ops[2])
    assert TrustedCertificate("ops", "client", fingerprint, True, (PROJECT,)) in (
        lxd0.trusted_certificates()
    )
    assert lxd0.trust_certificate("ops", ops[2], "client", [PROJECT]) == fingerprint  # no-op
    answer = https(lab, "lxd-0", ops, f"/1.0/instances?project={PROJECT}")
    assert answer.status_code == 200 and answer.json()["metadata"] == []
    refused = https(lab, "lxd-0", ops, "/1.0/instances?project=default")
    print(f"restricted client, default project: {refused.status_code} {refused.json()['error']}")
    assert refused.status_code == 403
    assert status_of(lab, "lxd-0", ops, "/1.0/instances") == 403

    # The trust store is the cluster's: another member lets it in as well.
    assert wait_for(
        lambda: status_of(lab, "lxd-1", ops, f"/1.0/instances?project={PROJECT}") == 200
    )

    # Widening the restriction is an update in place (same fingerprint, no re-add).
    lxd0.trust_certificate("ops", ops[2], "client", [PROJECT, "default"])
    answer = https(lab, "lxd-0", ops, "/1.0/instances?project=default")
    assert answer.status_code == 200
    assert sorted(answer.json()["metadata"]) == ["/1.0/instances/c1", "/1.0/instances/c2"]

    spelled = openssl_fingerprint(ops[0])
    assert spelled.lower().startswith("sha256 fingerprint=")
    assert normalize_fingerprint(spelled) == fingerprint
    assert lxd0.untrust_certificate(spelled) is True

    assert status_of(lab, "lxd-0", ops, "/1.0/instances?project=default") == 403
    assert lxd0.untrust_certificate(fingerprint) is False
    assert fingerprint not in {c.fingerprint for c in lxd0.trusted_certificates()}


def test_metrics_certificate_gets_metrics_only(lab: Lab):
    lxd0 = lab["lxd-0"].lxd
    scraper = client_identity(lab, "scraper")
    assert status_of(lab, "lxd-2", scraper, "/1.0/metrics") == 403
    # First trusted as a client (by its fingerprint's 12-digit prefix later), then as the
    # metrics scraper it is: LXD cannot change a type, so the entry is added again.
    fingerprint = lxd0.trust_certificate("scraper", scraper[2], "client")
    assert lxd0.trust_certificate("scraper", scraper[2], "metrics") == fingerprint
    assert [c.type for c in lxd0.trusted_certificates() if c.fingerprint == fingerprint] == [
        "metrics"
    ]

    # lxd-2 runs the containers: its metrics describe them.
    metrics = wait_for(lambda: https(lab, "lxd-2", scraper, "/1.0/metrics"), timeout=15)
    assert metrics.status_code == 200, metrics.text
    assert 'lxd_procs_total{name="c1",project="default",type="container"}' in metrics.text
    families = sorted(
        {line.split()[2] for line in metrics.text.splitlines() if line.startswith("# TYPE ")}
    )
    assert families and all(f.startswith("lxd_") for f in families)
    print(f"/1.0/metrics families of LXD 5.0.2: {' '.join(families)}")
    for path in ("/1.0/instances", "/1.0/certificates", "/1.0/cluster/members"):
        assert status_of(lab, "lxd-2", scraper, path) == 403, path

    assert lxd0.untrust_certificate(fingerprint[:12]) is True
    assert wait_for(lambda: status_of(lab, "lxd-2", scraper, "/1.0/metrics") == 403)


def test_client_token_is_redeemed_by_a_new_client(lab: Lab):
    lxd0 = lab["lxd-0"]
    token = lxd0.lxd.issue_client_token("laptop", [PROJECT])

    body = json.loads(base64.b64decode(token))
    assert body["client_name"] == "laptop"
    assert body["fingerprint"] == certificate_fingerprint(lxd0.lxd.cluster_certificate())
    assert body["addresses"] == [lxd0.address]
    assert body["secret"]
    assert "laptop" in lxd0.lxc("config", "trust", "list-tokens", "--format", "csv")

    laptop = client_identity(lab, "laptop")
    redeemed = https(
        lab, "lxd-0", laptop, "/1.0/certificates", method="POST",
        json={"type": "client", "password": token},
    )  # fmt: skip
    assert redeemed.status_code in (200, 201), redeemed.text

    fingerprint = certificate_fingerprint(laptop[2])
    assert TrustedCertificate("laptop", "client", fingerprint, True, (PROJECT,)) in (
        lxd0.lxd.trusted_certificates()
    )
    assert status_of(lab, "lxd-0", laptop, f"/1.0/instances?project={PROJECT}") == 200
    assert status_of(lab, "lxd-0", laptop, "/1.0/instances?project=default") == 403
    # Single use: the token is gone.
    assert "laptop" not in lxd0.lxc("config", "trust", "list-tokens", "--format", "csv")
    assert lxd0.lxd.untrust_certificate(fingerprint) is True


def test_restart_keeps_instances_and_reports_a_daemon_that_cannot_start(lab: Lab):
    lxd2 = lab["lxd-2"]
    pids = {name: init_pid(lab, name) for name in ("c1", "c2")}
    old_daemon = lxd2.pid()

    started = time.monotonic()
    lxd2.installer.restart()
    print(f"restart (2 running containers): {time.monotonic() - started:.1f}s")

    assert lxd2.pid() != old_daemon
    assert {name: init_pid(lab, name) for name in ("c1", "c2")} == pids

    # Failure injection (per machine: LXD_DIR is the machine's own): the log path is a
    # directory, so the daemon exits at start. Undo: remove the directory.
    log = os.path.join(lxd2.lxd_dir, "lxd.log")
    os.rename(log, f"{log}.saved")
    os.mkdir(log)
    started = time.monotonic()
    with pytest.raises(InstallError) as failed:
        lxd2.installer.restart()
    print(f"restart failure reported in {time.monotonic() - started:.1f}s: {failed.value}")
    assert str(failed.value) == (
        f"/usr/bin/lxd exited while starting (exit code 1): Error: open {log}: is a directory"
    )
    assert lxd2.installer.stop() is False  # no daemon left behind
    # The containers survive their daemon (nobody can ask it now: look at the processes).
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids.values())

    os.rmdir(log)
    os.rename(f"{log}.saved", log)
    started = time.monotonic()
    lxd2.installer.restart()

    assert wait_members(lab["lxd-0"], dict.fromkeys(NAMES, "ONLINE"), stable=1) == (
        dict.fromkeys(NAMES, "ONLINE")
    )
    print(f"undone: lxd-2 back and seen ONLINE in {time.monotonic() - started:.1f}s")
    assert lxc_list(lab)["c1"] == lxc_list(lab)["c2"] == ("RUNNING", "lxd-2")
    assert {name: init_pid(lab, name) for name in ("c1", "c2")} == pids
