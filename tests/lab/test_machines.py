"""Lab machines for real: namespaces, the private lab network, private state directories.

Needs root, iproute2 (``ip netns``) and util-linux (``unshare``, ``nsenter``). One lab of
two machines is shared by the module; the last test destroys it and checks that nothing
is left on the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import machines, procs
from lab.bundle import load_bundle
from lab.machines import Lab, Machine
from lab.model import Model
from lab.status import status

from .conftest import machine_lab

pytestmark = pytest.mark.skipif(
    machines.unavailable_reason() is not None,
    reason=machines.unavailable_reason() or "",
)

PORT = 8000
PROBE_FILE = "lab-machines-probe"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with machine_lab("lab-machines-", ["m0", "m1"]) as made:
        yield made


def _ipv4(machine: Machine, dev: str = "eth0") -> str:
    out = machine.run(["ip", "-4", "-o", "addr", "show", dev], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_addresses_are_private_to_the_lab(lab: Lab) -> None:
    m0, m1 = lab.machines()
    assert (m0.address, m1.address) == ("198.18.0.10", "198.18.0.11")
    assert " 198.18.0.10/24 " in _ipv4(m0)
    assert " 198.18.0.11/24 " in _ipv4(m1)
    # Loopback is up inside, and there is no way out: no default route.
    assert "127.0.0.1/8" in _ipv4(m0, "lo")
    routes = m0.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    assert "default" not in routes, routes
    # The host has no lab address, no lab interface, no lab route.
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "198.18." not in host_addrs
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert lab.prefix not in host_links
    host_route = subprocess.run(
        ["ip", "-4", "route", "get", m0.address], capture_output=True, text=True
    ).stdout
    assert lab.prefix not in host_route and "eth0@" not in host_route


GET = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[3])), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(sock.recv(4096).decode(errors="replace"))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
"""


def test_machines_reach_each_other_over_tcp(lab: Lab) -> None:
    m0, m1 = lab.machines()
    log = os.path.join(m1.state_dir, "http.log")
    server = [sys.executable, "-u", "-m", "http.server", "--bind", m1.address, str(PORT)]
    pid = m1.spawn(server, log)
    try:
        assert pid in m1.pids()
        get = [sys.executable, "-c", GET, m1.address]
        result = m0.run([*get, "10", str(PORT)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "Server: SimpleHTTP" in result.stdout
        # The host's own attempt never reaches m1 (whatever the host's network answers: an
        # intercepting gateway may accept any connection): m1 only ever saw m0.
        subprocess.run([*get, "0", str(PORT)], capture_output=True, timeout=30)
        time.sleep(0.3)
        with open(log) as f:
            requests = [line for line in f if '"GET / ' in line]
        assert [line.split()[0] for line in requests] == [m0.address], requests
    finally:
        os.kill(pid, 15)


def test_state_directories_are_private(lab: Lab) -> None:
    m0, m1 = lab.machines()
    target = f"/etc/ceph/{PROBE_FILE}-{lab.prefix}"
    written = m0.run(["/bin/sh", "-c", f"echo m0 > {target}"], capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    assert m0.run(["cat", target], capture_output=True, text=True).stdout == "m0\n"
    assert m1.run(["test", "-e", target]).returncode == 1
    assert not os.path.exists(target)
    with open(m0.host_path(target)) as f:
        assert f.read() == "m0\n"
    assert m0.host_path(target) == os.path.join(lab.root, "machines/m0/fs", target[1:])
    # Every private path is a mount point inside the machine, none on the host.
    inside = m1.run(["cat", "/proc/self/mounts"], capture_output=True, text=True).stdout
    points = {line.split()[1] for line in inside.splitlines()}
    assert set(machines.MACHINE_PATHS) <= points
    assert not any(p.startswith(lab.root + "/") for p in points)  # no other machine's ns
    assert not set(machines.MACHINE_PATHS) & {p for p, _ in procs.mount_table()}


def test_sys_lists_the_machines_own_interfaces(lab: Lab) -> None:
    m0, _ = lab.machines()
    veth = ["/usr/sbin/ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]
    m0.run(veth, check=True)
    listed = m0.run(["ls", "/sys/class/net"], capture_output=True, text=True).stdout.split()
    assert sorted(listed) == ["eth0", "lo", "probe0", "probe1"]
    assert not os.path.exists("/sys/class/net/probe0")  # not the host's
    assert m0.run(["test", "-d", "/sys/fs/cgroup"]).returncode == 0  # LXD needs cgroups


def test_a_later_process_reopens_the_lab(lab: Lab) -> None:
    again = Lab.open(lab.root)
    assert again.prefix == lab.prefix
    assert [(m.name, m.address) for m in again.machines()] == [
        ("m0", "198.18.0.10"),
        ("m1", "198.18.0.11"),
    ]
    assert again["m1"].run(["hostname", "-I"], capture_output=True, text=True).stdout.split() == [
        "198.18.0.11"
    ]
    # ... and so does a separate interpreter (a later CLI call).
    script = (
        "import sys; from lab.machines import Lab\n"
        "m = Lab.open(sys.argv[1]).machine('m0')\n"
        "sys.exit(m.run(['ip', '-4', '-o', 'addr', 'show', 'eth0']).returncode)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, lab.root], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "198.18.0.10/24" in result.stdout
    with pytest.raises(FileNotFoundError):
        Lab.open(os.path.join(lab.root, "nowhere"))


def test_destroy_leaves_nothing(lab: Lab) -> None:
    m1 = lab["m1"]
    pid = m1.spawn(["sleep", "300"], os.path.join(m1.state_dir, "sleep.log"))
    assert pid in m1.pids()
    started = time.monotonic()
    assert lab.destroy() == []
    assert time.monotonic() - started < 10  # sleep dies on SIGTERM: no 10 s wait
    assert not os.path.exists(f"/proc/{pid}") or not procs.alive(pid)
    assert lab.leftovers() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix not in netns
    with open("/proc/self/mounts") as f:
        assert lab.root not in f.read()
    assert not os.path.exists(lab.root)
    assert lab.destroy() == []  # idempotent


def test_destroy_cleans_up_a_half_created_lab() -> None:
    root = tempfile.mkdtemp(prefix="lab-machines-")
    lab = Lab(root)
    try:
        lab.create_machine("ok")
        # Fail midway: the network namespace exists, the mount namespace does not.
        lab._state["machines"].append({"name": "half", "index": 1})
        lab._save()
        half = lab.machine("half")
        lab._create_netns(half)
        with pytest.raises(ValueError):
            lab.create_machine("Bad_Name")
        reopened = Lab.open(root)
        assert {m.name for m in reopened.machines()} == {"ok", "half"}
        assert reopened.destroy() == []
    finally:
        lab.destroy()
    assert not os.path.exists(root)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix not in netns


# -- the base a machine presents -------------------------------------------------------------

PLATFORM_ID = "import platform; print(platform.freedesktop_os_release()['ID'])"


def _read(machine: Machine, path: str) -> str:
    result = machine.run(["cat", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_machine_presents_its_base() -> None:
    with open("/etc/os-release") as f:
        host_os_release = f.read()
    host_link = os.path.islink("/etc/os-release") and os.readlink("/etc/os-release")
    root = tempfile.mkdtemp(prefix="lab-machines-")
    lab = Lab(root)
    try:
        noble = lab.create_machine("noble", base="ubuntu@24.04")
        jammy = lab.create_machine("jammy", base="ubuntu@22.04/stable")
        plain = lab.create_machine("plain")
        with pytest.raises(ValueError, match="cannot present base 'centos@7'"):
            lab.create_machine("centos", base="centos@7")
        assert [(m.name, m.base) for m in Lab.open(root).machines()] == [
            ("noble", "ubuntu@24.04"),
            ("jammy", "ubuntu@22.04"),
            ("plain", None),
        ]

        os_release = _read(noble, "/etc/os-release").splitlines()
        assert 'NAME="Ubuntu"' in os_release and 'VERSION_ID="24.04"' in os_release
        assert {"ID=ubuntu", "ID_LIKE=debian", "VERSION_CODENAME=noble"} <= set(os_release)
        assert any(
            line.startswith('PRETTY_NAME="Ubuntu 24.04 (lab machine; ') for line in os_release
        )
        found = noble.run(["python3", "-c", PLATFORM_ID], capture_output=True, text=True)
        assert found.stdout == "ubuntu\n", found.stderr
        assert "VERSION_CODENAME=jammy" in _read(jammy, "/etc/os-release").splitlines()
        # The generated files live under the machine's state dir.
        assert os.path.isfile(os.path.join(noble.state_dir, "os-release"))

        # Without a base: the host's file. The host's own files are untouched.
        assert _read(plain, "/etc/os-release") == host_os_release
        with open("/etc/os-release") as f:
            assert f.read() == host_os_release
        assert (os.path.islink("/etc/os-release") and os.readlink("/etc/os-release")) == host_link

        # A removed machine takes its files; the other machine keeps its own.
        assert lab.destroy_machine("noble") == []
        assert not os.path.exists(noble.state_dir)
        assert "VERSION_CODENAME=jammy" in _read(jammy, "/etc/os-release").splitlines()
    finally:
        left = lab.destroy()
    assert left == []
    assert not os.path.exists(root)
    with open("/etc/os-release") as f:
        assert f.read() == host_os_release


def test_the_model_gives_a_principal_unit_the_base_of_its_application(tmp_path: Path) -> None:
    charms = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charms")
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(
        "default-base: ubuntu@24.04\napplications:\n"
        f"  probe:\n    charm: {charms}/probe\n    num_units: 1\n"
        f"  probe-sub:\n    charm: {charms}/probe-sub\n"
        "relations:\n  - [probe:host, probe-sub:host]\n"
    )
    root = str(tmp_path / "model")
    model = Model.create(root)
    try:
        model.deploy(load_bundle(bundle))  # records and creates machines; no hook runs
        model.add_unit("probe-sub", machine=model.unit("probe/0").machine, principal="probe/0")
        machine = model.machine_of("probe/0")
        assert machine.base == "ubuntu@24.04"
        assert len(model.lab.machines()) == 1  # the subordinate is on its principal's
        assert "VERSION_CODENAME=noble" in _read(machine, "/etc/os-release").splitlines()
        assert status(model)["machines"][machine.name]["base"] == {
            "name": "ubuntu",
            "channel": "24.04",
        }
    finally:
        assert Lab(root).destroy() == []
