"""Day-2 operations on the product's bundle, real LXD daemons, driven by ``lab``.

One deployment for the module: ``bundles/lxd-cluster.yaml`` with the lab overlay and a
client (``tests/lab/charms/https-client``) on ``https`` and ``metrics-endpoint``, a busybox
container on every member →
``evacuate`` moves the member's container elsewhere (member EVACUATED), ``restore`` brings
it home; a rolling ``upgrade`` evacuates, refreshes (every daemon restarts) and restores
each member in turn, never with fewer than 2 members ONLINE, every container RUNNING at the
end; a refresh that fails on the 2nd member stops the rollout there (that member stays
evacuated, the 3rd is untouched) and a rerun completes it; the client lists instances over
HTTPS with its own certificate and gets 403 once the relation is removed; the scrape job
the client got returns ``lxd_`` metrics from every member with its certificate;
``api-port`` changed after bootstrap blocks every unit (naming the fix) and changes nothing
in LXD (3 members ONLINE a minute later), and set back makes them active; with
``metrics-port`` set, the job's targets are the members' metrics listeners, which answer it;
a ``preseed`` changed after bootstrap sets its server key and makes its profile on every
member, and one that changes the default pool's driver blocks every unit, changing nothing;
a machine lost (``lab kill-machine``) is named OFFLINE by the other units and the
application once LXD says so, and back (``lab start-machine``) its unit starts LXD again.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from charm_common import certs
from lab import hosts

from .operator import BUNDLE, OVERLAY, instances, lab, leader, members, model_root, status, units

pytestmark = pytest.mark.ordered_steps

TIMEOUT = "900"
CLIENTS = os.path.join(os.path.dirname(__file__), "overlays", "clients.yaml")
CLIENT = "https-client/0"
CLIENT_DIR = "/var/lib/juju/https-client"
HOMES = {"c0": "lxd-0", "c1": "lxd-1", "c2": "lxd-2"}  # one container on every member
# Makes LXD fail to start on one machine (measured: "open /var/lib/lxd/lxd.log: is a
# directory"), so the refresh step of the upgrade fails there; and its undoing.
BREAK_LXD = "mv /var/lib/lxd/lxd.log /var/lib/lxd/lxd.log.saved && mkdir /var/lib/lxd/lxd.log"
MEND_LXD = "rmdir /var/lib/lxd/lxd.log && mv /var/lib/lxd/lxd.log.saved /var/lib/lxd/lxd.log"


@pytest.fixture(scope="module")
def root():
    with model_root("lab-day2-") as path:
        yield path


def run(root: str, unit: str, action: str, *params: str) -> dict:
    """An action's results (``lab run`` prints them as YAML)."""
    return yaml.safe_load(lab(root, "run", unit, action, *params, "--timeout", TIMEOUT).stdout)


def daemon_pids(root: str) -> dict[str, str]:
    """The pid of each unit's LXD daemon."""
    return {
        unit: lab(root, "exec", unit, "--", "cat", "/var/lib/lxd/lxd.pid").stdout.strip()
        for unit in sorted(units(root))
    }


def all_running_at_home(root: str) -> None:
    found = instances(root, "lxd/0")
    assert {name: found[name] for name in HOMES} == {
        name: (home, "RUNNING") for name, home in HOMES.items()
    }


class MemberWatch:
    """Samples ``lxc cluster list`` from any unit that answers, in the background."""

    def __init__(self, root: str):
        self.root = root
        self.samples: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        names = sorted(units(self.root))
        while not self._stop.is_set():
            for unit in names:
                listing = lab(
                    self.root,
                    "exec",
                    unit,
                    "--",
                    "lxc",
                    "cluster",
                    "list",
                    "-f",
                    "csv",
                    check=False,
                )
                if listing.returncode == 0:
                    self.samples.append(
                        {ln.split(",")[0]: ln.split(",")[-2] for ln in listing.stdout.splitlines()}
                    )
                    break
            time.sleep(0.2)

    def __enter__(self) -> MemberWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def evacuated_in_turn(self) -> list[str]:
        """Members in the order they were seen EVACUATED (each once: one at a time)."""
        order: list[str] = []
        for sample in self.samples:
            for member, state in sample.items():
                if state == "EVACUATED" and (not order or order[-1] != member):
                    order.append(member)
        return order


@pytest.fixture
def watch(root: str) -> Iterator[MemberWatch]:
    with MemberWatch(root) as w:
        yield w


def curl(root: str, *args: str) -> str:
    """``curl`` in the client's machine: the response body, then the HTTP status code."""
    command = ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *args]
    return lab(root, "exec", CLIENT, "--", *command).stdout


def get(root: str, address: str, server_name: str, path: str, *tls: str) -> tuple[str, str]:
    """GET ``path`` from the member at ``address``, verifying it as ``server_name``.

    Returns the body and the HTTP status code.
    """
    host, port = address.rsplit(":", 1)
    resolve = ["--resolve", f"{server_name}:{port}:{host}"]
    out = curl(root, *tls, *resolve, f"https://{server_name}:{port}{path}")
    body, code = out.rsplit("\n", 1)
    return body, code


def client_file(root: str, name: str) -> str:
    return lab(root, "exec", CLIENT, "--", "cat", f"{CLIENT_DIR}/{name}").stdout


def dns_name(pem: str) -> str:
    """A DNS name of the certificate (LXD's names its bootstrap host, and loopback IPs)."""
    return next(s for s in sorted(certs.certificate_sans(pem)) if not _is_ip(s))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- steps -------------------------------------------------------------------------------


def test_deploy_with_a_container_on_every_member(root: str):
    lab(root, "deploy", BUNDLE, "--overlay", OVERLAY, "--overlay", CLIENTS, "--timeout", TIMEOUT)

    assert members(root, "lxd/0") == {member: "ONLINE" for member in HOMES.values()}
    image = hosts.build_busybox_image(os.path.join(os.path.dirname(root), "busybox.tar.gz"))
    lab(root, "exec", "lxd/0", "--", "lxc", "image", "import", image, "--alias", "busybox")
    for name, home in HOMES.items():
        lab(root, "exec", "lxd/0", "--", "lxc", "launch", "busybox", name, "--target", home)
    all_running_at_home(root)


def test_evacuate_moves_the_container_and_restore_brings_it_home(root: str):
    result = run(root, "lxd/1", "evacuate")

    assert result["member"] == "lxd-1"
    where, state = instances(root, "lxd/0")["c1"]
    assert where != "lxd-1" and state == "RUNNING"
    assert where in json.dumps(result["moved"]), result  # the result says where it went
    assert members(root, "lxd/0")["lxd-1"] == "EVACUATED"

    result = run(root, "lxd/1", "restore")

    assert members(root, "lxd/0")["lxd-1"] == "ONLINE"
    all_running_at_home(root)


def test_evacuate_refuses_when_no_member_could_take_the_instances(root: str):
    run(root, "lxd/0", "evacuate")
    run(root, "lxd/2", "evacuate")
    refused = lab(root, "run", "lxd/1", "evacuate", check=False)
    assert refused.returncode == 1, refused.stdout
    assert members(root, "lxd/0")["lxd-1"] == "ONLINE"
    assert instances(root, "lxd/0")["c1"] == ("lxd-1", "RUNNING")  # nothing moved
    run(root, "lxd/0", "restore")
    run(root, "lxd/2", "restore")
    all_running_at_home(root)


def test_rolling_upgrade_takes_one_member_out_at_a_time(root: str, watch: MemberWatch):
    before = daemon_pids(root)

    result = run(root, leader(root), "upgrade")
    lab(root, "wait", "--timeout", TIMEOUT)

    order = str(result["order"]).split()
    assert sorted(order) == sorted(units(root))
    after = daemon_pids(root)
    assert all(after[u] != before[u] for u in order), (before, after)  # every daemon restarted
    assert watch.evacuated_in_turn() == ["lxd-" + u.split("/")[1] for u in order]
    assert watch.samples and all(list(s.values()).count("ONLINE") >= 2 for s in watch.samples), (
        watch.samples
    )
    assert members(root, "lxd/0") == {member: "ONLINE" for member in HOMES.values()}
    all_running_at_home(root)
    assert all(u["workload-status"]["current"] == "active" for u in units(root).values())


def test_a_failed_refresh_stops_the_rollout_and_a_rerun_completes_it(root: str):
    before = daemon_pids(root)
    # The next rollout's order is the previous one's (leader last); break its 2nd member.
    names = sorted(units(root), key=lambda u: (u == leader(root), int(u.split("/")[1])))
    second = names[1]
    lab(root, "exec", second, "--", "sh", "-c", BREAK_LXD)
    try:
        result = run(root, leader(root), "upgrade")
        lab(root, "wait", "--timeout", TIMEOUT)
        order = str(result["order"]).split()
        assert order == names

        # THEN it stopped at the 2nd member: evacuated, blocked with the reason
        status = units(root)[second]["workload-status"]
        assert status["current"] == "blocked", status
        assert "refresh" in status["message"] and "is a directory" in status["message"], status
        member = "lxd-" + second.split("/")[1]
        # evacuated, and its daemon down (LXD lists it OFFLINE once heartbeats stop)
        assert members(root, order[0])[member] in ("EVACUATED", "OFFLINE")
        pid = lab(root, "exec", order[2], "--", "cat", "/var/lib/lxd/lxd.pid").stdout.strip()
        assert pid == before[order[2]]  # the 3rd member was not touched
        first_pid = lab(root, "exec", order[0], "--", "cat", "/var/lib/lxd/lxd.pid").stdout
        assert first_pid.strip() != before[order[0]]  # the 1st was upgraded
        app = yaml.safe_load(lab(root, "status", "--format", "json").stdout)
        message = app["applications"]["lxd"]["application-status"]["message"]
        assert "stopped at " + second in message, message
        for name, (where, state) in instances(root, order[0]).items():
            assert where != member and state == "RUNNING", name  # its container runs elsewhere
    finally:
        lab(root, "exec", second, "--", "sh", "-c", MEND_LXD, check=False)

    # WHEN the operator reruns it, THEN it resumes at the failed member and completes
    resumed = run(root, leader(root), "upgrade")
    lab(root, "wait", "--timeout", TIMEOUT)

    assert resumed.get("resumed-at") == second, resumed
    assert members(root, "lxd/0") == {member: "ONLINE" for member in HOMES.values()}
    all_running_at_home(root)
    assert all(u["workload-status"]["current"] == "active" for u in units(root).values())
    assert daemon_pids(root)[order[2]] != before[order[2]]


def test_the_https_client_lists_instances_until_the_relation_goes(root: str):
    name = dns_name(client_file(root, "server.crt"))
    addresses = client_file(root, "addresses").strip().split(",")
    assert len(addresses) == len(HOMES)
    # its own certificate, the server verified with the certificate the relation gave
    tls = ("--cert", f"{CLIENT_DIR}/client.crt", "--key", f"{CLIENT_DIR}/client.key")
    lab(root, "exec", CLIENT, "--", "cp", f"{CLIENT_DIR}/server.crt", f"{CLIENT_DIR}/kept.crt")
    tls += ("--cacert", f"{CLIENT_DIR}/kept.crt")
    for address in addresses:
        body, code = get(root, address, name, "/1.0/instances", *tls)
        assert code == "200", body
        assert all(f"/1.0/instances/{c}" in body for c in HOMES), body

    lab(root, "remove-relation", "https-client:lxd", "lxd:https", "--timeout", TIMEOUT)

    for address in addresses:
        body, code = get(root, address, name, "/1.0/instances", *tls)
        assert code == "403", body


def scrape_every_target(root: str) -> tuple[list[str], str, list[str]]:
    """Scrape ``/1.0/metrics`` of every target of the client's job as Prometheus would.

    Returns:
        The targets, the job's server name and curl's options for its tls_config.
    """
    (job,) = json.loads(client_file(root, "scrape_jobs.json"))
    assert job["metrics_path"] == "/1.0/metrics" and job["scheme"] == "https"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert len(targets) == len(HOMES)
    config = job["tls_config"]
    for field in ("ca", "cert", "key"):  # as Prometheus gets them, into files for curl
        write = f"umask 077; cat > {CLIENT_DIR}/job.{field} <<'EOF'\n{config[field]}EOF"
        lab(root, "exec", CLIENT, "--", "sh", "-c", write)
    tls = []
    for flag, field in (("--cacert", "ca"), ("--cert", "cert"), ("--key", "key")):
        tls += [flag, f"{CLIENT_DIR}/job.{field}"]
    for target in targets:
        body, code = get(root, target, config["server_name"], "/1.0/metrics", *tls)
        assert code == "200", body
        assert "lxd_cpu_seconds_total" in body, body[:500]
    return targets, config["server_name"], tls


def test_the_scrape_job_gets_lxd_metrics_from_every_member(root: str):
    targets, server, tls = scrape_every_target(root)
    assert all(target.endswith(":8443") for target in targets), targets
    # the metrics certificate reads metrics and nothing else
    body, code = get(root, targets[0], server, "/1.0/instances", *tls)
    assert code == "403", body


def test_with_a_metrics_port_the_job_scrapes_the_metrics_listeners(root: str):
    lab(root, "config", "lxd", "metrics-port=9100", "--timeout", TIMEOUT)

    targets, _, _ = scrape_every_target(root)
    assert all(target.endswith(":9100") for target in targets), targets

    lab(root, "config", "lxd", "metrics-port=0", "--timeout", TIMEOUT)


def test_api_port_is_fixed_once_the_cluster_exists(root: str):
    # GIVEN the running cluster, as every member sees its own server config
    def server_configs() -> dict[str, str]:
        return {u: lab(root, "exec", u, "--", "lxc", "config", "show").stdout for u in units(root)}

    before = server_configs()
    # WHEN the operator moves the API port
    lab(root, "config", "lxd", "api-port=8444", "--timeout", TIMEOUT)
    # THEN every unit says why it will not, and with what fix; LXD is left as it was
    fix = "set it back: juju config lxd api-port=8443"
    for name, unit in units(root).items():
        status = unit["workload-status"]
        assert status["current"] == "blocked", (name, status)
        assert status["message"].startswith("api-port is fixed at 8443 since bootstrap"), status
        assert status["message"].endswith(fix), status
    time.sleep(60)  # longer than LXD takes to call a member without heartbeats OFFLINE
    assert server_configs() == before
    assert members(root, "lxd/0") == {member: "ONLINE" for member in HOMES.values()}
    all_running_at_home(root)

    # WHEN it is set back, THEN every unit is active again
    lab(root, "config", "lxd", "api-port=8443", "--timeout", TIMEOUT)
    for name, unit in units(root).items():
        assert unit["workload-status"]["current"] == "active", (name, unit["workload-status"])


PRESEED = """\
config: {images.auto_update_interval: 12}
profiles:
- {name: lab, description: set by the preseed, config: {limits.cpu: 1}}
"""
# The same, plus a change LXD cannot make in place (the default pool is a dir pool).
PRESEED_NEW_DRIVER = """\
config: {images.auto_update_interval: 24}
storage_pools: [{name: default, driver: btrfs}]
profiles:
- {name: lab, config: {limits.cpu: 2}}
"""


def test_a_preseed_changed_after_bootstrap_is_applied_on_every_member(root: str):
    lab(root, "config", "lxd", f"preseed={PRESEED}", "--timeout", TIMEOUT)

    for name, unit in units(root).items():
        assert unit["workload-status"]["current"] == "active", (name, unit["workload-status"])
        interval = lab(
            root, "exec", name, "--", "lxc", "config", "get", "images.auto_update_interval"
        )
        assert interval.stdout.strip() == "12", name
        profile = yaml.safe_load(
            lab(root, "exec", name, "--", "lxc", "profile", "show", "lab").stdout
        )
        assert profile["config"] == {"limits.cpu": "1"}, (name, profile)
        assert profile["description"] == "set by the preseed"


def test_a_preseed_change_lxd_cannot_make_in_place_blocks_and_changes_nothing(root: str):
    def shown() -> dict[str, list[dict]]:
        found = {}
        for name in units(root):
            views = [
                yaml.safe_load(lab(root, "exec", name, "--", "lxc", *command).stdout)
                for command in (
                    ("config", "show"),
                    ("storage", "show", "default"),
                    ("profile", "show", "lab"),
                )
            ]
            views[1]["locations"] = sorted(views[1]["locations"])  # LXD lists them in any order
            found[name] = views
        return found

    before = shown()
    lab(root, "config", "lxd", f"preseed={PRESEED_NEW_DRIVER}", "--timeout", TIMEOUT)

    refusal = "preseed: storage-pool default exists with driver dir, not btrfs: rename one of them"
    for name, unit in units(root).items():
        status = unit["workload-status"]
        assert (status["current"], status["message"]) == ("blocked", refusal), name
    assert shown() == before

    lab(root, "config", "lxd", f"preseed={PRESEED}", "--timeout", TIMEOUT)
    for name, unit in units(root).items():
        assert unit["workload-status"]["current"] == "active", (name, unit["workload-status"])


def wait_for_members(root: str, unit: str, wanted: dict[str, str]) -> None:
    """Wait until ``unit``'s member list is ``wanted``.

    LXD calls a member OFFLINE once its heartbeats have stopped for
    ``cluster.offline_threshold`` (20 s by default).
    """
    deadline = time.monotonic() + 180
    while (seen := members(root, unit)) != wanted:
        assert time.monotonic() < deadline, seen
        time.sleep(2)


@pytest.fixture
def short_update_status(root: str) -> Iterator[None]:
    """update-status every 10 s (as Juju tests set it), Juju's default again afterwards."""
    lab(root, "model-config", "update-status-hook-interval=10s")
    yield
    lab(root, "model-config", "update-status-hook-interval=5m")


def wait_through_update_status(root: str) -> None:
    """``lab wait`` until the model has been idle for longer than the 10 s interval."""
    lab(root, "wait", "--idle-period", "15", "--timeout", TIMEOUT)


@pytest.mark.usefixtures("short_update_status")
def test_a_lost_machine_is_named_offline_and_back_active(root: str):
    # GIVEN a non-leader's machine lost as Juju loses one: every process killed
    lost = next(u for u in sorted(units(root)) if u != leader(root))
    member = "lxd-" + lost.split("/")[1]
    live = leader(root)
    lab(root, "kill-machine", units(root)[lost]["machine"])

    # WHEN LXD calls its member OFFLINE, THEN after their next update-status the other units
    # and the application name it, and the lost unit shows its agent lost
    wait_for_members(
        root, live, {m: "OFFLINE" if m == member else "ONLINE" for m in HOMES.values()}
    )
    wait_through_update_status(root)
    found = status(root)["applications"]["lxd"]
    for name, unit in found["units"].items():
        if name == lost:
            assert unit["juju-status"]["current"] == "lost", unit
        else:
            message = unit["workload-status"]["message"]
            assert message.endswith(f"(3 members; {member} OFFLINE)"), (name, message)
    assert found["application-status"] == {
        "current": "blocked",
        "message": f"2/3 members ONLINE; {member} OFFLINE",
    }

    # WHEN the machine is back, THEN its unit starts LXD again and everything is active
    lab(root, "start-machine", units(root)[lost]["machine"], "--timeout", TIMEOUT)
    wait_for_members(root, live, {m: "ONLINE" for m in HOMES.values()})
    wait_through_update_status(root)
    found = status(root)["applications"]["lxd"]
    for name, unit in found["units"].items():
        assert unit["workload-status"]["current"] == "active", (name, unit["workload-status"])
    assert found["application-status"] == {"current": "active", "message": "3 members"}
    with open(os.path.join(root, "logs", f"unit-{lost.replace('/', '-')}.log")) as log:
        assert "LXD was not running: started it" in log.read()
