r"""The benchmark's plain path: the bundle's end state from the workload modules, no charms.

``benchmarks/deploy.py`` runs every step as its own process inside a lab machine::

    python benchmarks/plain.py STEP < ARGS.json        # prints one JSON object

with the workload modules on ``PYTHONPATH`` (:data:`PYTHONPATH`, relative to the
repository). A step calls the projects' own workload code (no hook, no ``ops`` event) with
the arguments the charms use in their ``_reconcile``; what one charm learns from a relation
comes in on stdin, what it would publish goes out on stdout. Modules are imported by the
step that needs them, so each process loads only what its charm hook would.

Before any step, on the host, ``python benchmarks/plain.py derive CHARM < OPTIONS.json``
(one process per charm, :func:`charm_path`) asks ovn-bridge's and ceph-link's own code what
they make of the bundle's options (:func:`derive`): the plain path does not parse options
or build LXD objects itself, so it cannot drift from the charms.

Steps, in the order ``deploy.py`` runs them (``parallel``: on every machine at once):

``start`` (LXD machines, parallel)
    lxd: the installer (``detect_installer``: the distro package here), daemon started
    and answering. ovn-bridge: its packages, Open vSwitch started, this machine's private
    key and a CSR for its address. ceph-link: its package (``ceph-common``).
``sign`` (the first machine)
    ovn-bridge's leader: a new cluster CA, every CSR signed (the CA key is in a Juju secret
    in the charm; here it dies with the process).
``bootstrap``, ``token``, ``join`` (the first machine; each joiner in turn)
    lxd: ``bootstrap_cluster`` with the preseed option, then per joiner a join token on the
    first member (``issue_join_token`` + its ``member_config``) and ``join_cluster``.
``central`` (the central machines: the first, then the others in parallel)
    ovn-bridge: certificate files, ``Central.ensure`` (bootstrap, or join the first
    member), until both databases are raft members.
``chassis`` (LXD machines, parallel)
    ovn-bridge: ovn-northd on the central machines, the chassis everywhere
    (``Switch.configure`` with the userspace datapath, ``Controller.ensure_running``).
``ceph`` (the Ceph machine, from the start, while the rest runs)
    the lab's ceph-provider: ``ensure_cluster`` + ``wait_osd_up``, ceph-link's broker
    request (``ceph.broker_request``) served with ``process_broker_request``, the client
    key (``ensure_client_key``).
``ceph-client`` (LXD machines, parallel, once Ceph answered)
    ceph-link: ``ceph.conf`` and the keyring where LXD reads them.
``member`` (LXD machines, parallel, once the cluster and OVN are up)
    lxd applying the ``lxd-member`` requests on its member: the server config (the OVN
    northbound connection) and the member-specific definitions (``ensure_member_object``:
    only database records, LXD checks nothing yet).
``objects`` (the first machine)
    the lxd leader: the objects cluster-wide (``ensure_cluster_object``), in lxd's order:
    the networks (as soon as every member has its definitions), then the pool (once the
    Ceph files are on every machine too).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Where the workload modules are (repository-relative), for ``PYTHONPATH``.
PYTHONPATH = (
    "charms/lxd/src",
    "charms/lxd/lib",
    "charms/ovn-bridge/src",
    "charms/ceph-link/src",
    "tests/lab/charms/ceph-provider/src",
    "common",
)
RAFT_TIMEOUT = 120.0  # seconds for a new central member to become a raft member


def charm_path(charm: str) -> tuple[str, ...]:
    """``PYTHONPATH`` (repository-relative) to import one charm's own modules.

    The charms each have a ``charm`` and a ``config`` module: one charm per process.
    """
    return (f"charms/{charm}/src", f"charms/{charm}/lib", "common")


# -- what the charms derive from their options -----------------------------------------------


def derive(charm: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What charm ``charm`` makes of ``options``, by its own code (:func:`charm_path` only).

    ovn-bridge: its config model's chassis settings and the networks it asks lxd for
    (``charm.lxd_networks``); ceph-link: its pools and the storage pools it asks lxd for
    (``charm.rbd_pools``; the cephx user is the application's name, ``options["name"]``).
    Objects are ``[entity, encoded]`` as the ``lxd-member`` relation carries them.
    """
    import charm as charm_module
    from charm_common.lxd_member import NETWORK, STORAGE_POOL
    from charm_common.typed_input import load_model
    from config import CharmConfig

    values = {k: v for k, v in options.items() if k != "name"}
    config = load_model(CharmConfig, values)
    if charm == "ovn-bridge":
        return {
            "central_units": config.central_units,
            "datapath_type": config.datapath_type,
            "bridge_mappings": config.mappings,
            "bridge_interfaces": config.bridge_interfaces,
            "objects": [[NETWORK, o.encode("type")] for o in charm_module.lxd_networks(config)],
        }
    if charm == "ceph-link":
        return {
            "user": options["name"],
            "pools": [[p.name, p.replicas, p.pg_num] for p in config.pool_list],
            "objects": [
                [STORAGE_POOL, o.encode("driver")]
                for o in charm_module.rbd_pools(config, options["name"])
            ],
        }
    raise ValueError(f"no derivation for charm {charm!r}")


@dataclass(frozen=True)
class Settings:
    """What the plain path needs from the merged bundle, as the charms derive it.

    ``lxd`` options are read as the lxd charm reads them (``api-port``, ``preseed``); the
    rest comes from ovn-bridge's and ceph-link's own code (:func:`derive`, run by the
    benchmark in a process per charm). ``objects`` are in lxd's order: networks, then pools.
    """

    api_port: int
    preseed: str
    central_units: int
    datapath_type: str
    bridge_mappings: dict[str, str]
    bridge_interfaces: dict[str, list[str]]
    pools: list[list[Any]]  # [name, replicas, pg_num]
    objects: list[list[Any]]  # [entity, encoded]
    ceph_user: str

    @classmethod
    def from_derived(
        cls, lxd: Mapping[str, Any], ovn_bridge: Mapping[str, Any], ceph_link: Mapping[str, Any]
    ) -> Settings:
        """The settings from lxd's options and :func:`derive`'s answers for the others."""
        return cls(
            api_port=int(lxd.get("api-port", 8443)),
            preseed=str(lxd.get("preseed", "")),
            central_units=ovn_bridge["central_units"],
            datapath_type=ovn_bridge["datapath_type"],
            bridge_mappings=ovn_bridge["bridge_mappings"],
            bridge_interfaces=ovn_bridge["bridge_interfaces"],
            pools=ceph_link["pools"],
            objects=[*ovn_bridge["objects"], *ceph_link["objects"]],
            ceph_user=str(ceph_link["user"]),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settings:
        """The settings as :meth:`as_json` wrote them."""
        return cls(**data)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able dict (for a step's stdin)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def lxd_objects(self) -> list[tuple[str, Any]]:
        """(entity, ``LXDObject``) of what ovn-bridge and ceph-link ask lxd for, in order."""
        from charm_common.lxd_member import NETWORK, LXDObject

        return [
            (entity, LXDObject.decode(data, "type" if entity == NETWORK else "driver", entity))
            for entity, data in self.objects
        ]


# -- steps -----------------------------------------------------------------------------------


def _lxd() -> Any:
    """The lxd charm's client of this machine's daemon (with the installer's paths)."""
    from installer import detect_installer
    from lxd import LXD

    return LXD(detect_installer().paths)


def step_start(args: Mapping[str, Any]) -> dict[str, Any]:
    """LXD and Open vSwitch running, this machine's OVN key and CSR (``csr``)."""
    import ovn
    from charm_common import certs, packages
    from installer import detect_installer
    from lxd import LXD

    installer = detect_installer()  # the lxd charm's _install
    if installer.installed_version() is None:
        installer.install("", "")
    installer.ensure_running()
    LXD(installer.paths).wait_ready()
    packages.install(ovn.PACKAGES)  # ovn-bridge's _install and _run_chassis
    ovn.Switch().ensure_running()
    key = ovn.ensure_private_key(ovn.TLSFiles(), certs.generate_private_key)
    csr = certs.make_csr(key, args["unit"], sorted({args["address"]}))
    packages.install(("ceph-common",))  # ceph-link's packages (ceph.PACKAGES)
    return {"csr": csr}


def step_sign(args: Mapping[str, Any]) -> dict[str, Any]:
    """A cluster CA (``ca``) and every CSR of ``csrs`` signed (``certs``)."""
    from charm_common import certs

    ca_key, ca_cert = certs.generate_ca(args["ca_name"])
    signed = {name: certs.sign_csr(csr, ca_key, ca_cert) for name, csr in args["csrs"].items()}
    return {"ca": ca_cert, "certs": signed}


def step_bootstrap(args: Mapping[str, Any]) -> dict[str, Any]:
    """Create the LXD cluster on this machine (its address, the preseed option)."""
    from lxd import parse_preseed

    settings = Settings.from_json(args["settings"])
    address = f"{args['address']}:{settings.api_port}"
    preseed = parse_preseed(settings.preseed)
    if not _lxd().bootstrap_cluster(args["member"], address, preseed, cluster_address=address):
        raise RuntimeError("already clustered")
    return {}


def step_token(args: Mapping[str, Any]) -> dict[str, Any]:
    """A join token for ``member`` and the cluster's member-specific keys, filled."""
    from lxd import fill_member_config

    lxd = _lxd()
    token = lxd.issue_join_token(args["member"])
    return {"token": token.encode(), "member_config": fill_member_config(lxd.member_config(), {})}


def step_join(args: Mapping[str, Any]) -> dict[str, Any]:
    """Join the cluster with a token from :func:`step_token`."""
    from lxd import JoinToken

    settings = Settings.from_json(args["settings"])
    address = f"{args['address']}:{settings.api_port}"
    token = JoinToken.decode(args["token"])
    if not _lxd().join_cluster(token, args["member"], address, args["member_config"]):
        raise RuntimeError("already clustered")
    return {}


def step_central(args: Mapping[str, Any]) -> dict[str, Any]:
    """OVN central here: create (``bootstrap``) or join (``peers``) both raft clusters."""
    import ovn

    tls = ovn.TLSFiles()
    ovn.write_tls_files(tls, None, args["cert"], args["ca"])
    central = ovn.Central()
    central.ensure(args["address"], args["peers"], args["bootstrap"], tls)
    deadline = time.monotonic() + RAFT_TIMEOUT
    while True:
        try:
            states = [central.status(db) for db in ("nb", "sb")]
        except ovn.OVNError:
            states = []
        if states and all(state.is_member for state in states):
            return {"status": {s.db: s.status for s in states}}
        if time.monotonic() > deadline:
            raise RuntimeError(f"not a raft member after {RAFT_TIMEOUT:.0f} s: {states}")
        time.sleep(0.2)


def step_chassis(args: Mapping[str, Any]) -> dict[str, Any]:
    """ovn-northd (on a central machine) and this machine's chassis against ``central``."""
    import ovn

    settings = Settings.from_json(args["settings"])
    tls = ovn.TLSFiles()
    ovn.write_tls_files(tls, None, args["cert"], args["ca"])
    central = args["central"]
    if args["northd"]:
        ovn.Central().ensure_northd(central, central, tls)
    switch = ovn.Switch()
    switch.ensure_running()
    chassis = ovn.ChassisConfig(
        system_id=args["system_id"],
        sb_remote=ovn.connection_string(central, ovn.SB_PORT),
        encap_ip=args["address"],
        datapath_type=settings.datapath_type,
        bridge_mappings=settings.bridge_mappings,
        bridge_interfaces=settings.bridge_interfaces,
    )
    switch.configure(chassis)
    ovn.Controller().ensure_running(tls)
    return {}


def step_ceph(args: Mapping[str, Any]) -> dict[str, Any]:
    """A single-node Ceph on this machine, the broker request's pools, the client's key."""
    import ceph_single

    import ceph
    from charm_common import packages

    settings = Settings.from_json(args["settings"])
    address = args["address"]
    packages.install(ceph_single.PACKAGES)
    ceph_single.ensure_cluster(address)
    ceph_single.wait_osd_up()
    key = ceph_single.ensure_client_key(settings.ceph_user)
    request, request_id = ceph.broker_request([ceph.Pool(*pool) for pool in settings.pools])
    response = ceph_single.process_broker_request(request)
    if response.get("exit-code") != 0 or response.get("request-id") != request_id:
        raise RuntimeError(f"broker request refused: {response}")
    return {"key": key, "address": address, "mons": json.dumps([address])}


def step_ceph_client(args: Mapping[str, Any]) -> dict[str, Any]:
    """ceph-link's files for LXD: ``ceph.conf`` and the keyring, from the provider's answer."""
    import ceph
    from installer import detect_installer

    settings = Settings.from_json(args["settings"])
    directory = detect_installer().paths.ceph_dir  # what lxd tells ceph-link ("paths")
    given = args["ceph"]
    mons = ceph.mon_addresses([given["address"]], given["mons"])
    ceph.write_keyring(directory, settings.ceph_user, ceph.valid_key(given["key"]))
    ceph.write_conf(directory, ceph.render_conf(mons, "cephx"))
    return {}


def step_member(args: Mapping[str, Any]) -> dict[str, Any]:
    """This member's server config and its definitions of every requested object."""
    import ovn
    from lxd import needs_member_stage

    settings = Settings.from_json(args["settings"])
    lxd = _lxd()
    # ovn-bridge's request: the northbound connection over every central member
    nb = ovn.connection_string(args["central"], ovn.NB_PORT)
    lxd.update_server_config({"network.ovn.northbound_connection": nb})
    for entity, obj in settings.lxd_objects():
        if needs_member_stage(entity, obj):
            lxd.ensure_member_object(entity, obj, args["member"])
    return {}


def step_objects(args: Mapping[str, Any]) -> dict[str, Any]:
    """The requested objects of ``entity`` (network, storage-pool) cluster-wide, in order."""
    settings = Settings.from_json(args["settings"])
    lxd = _lxd()
    for entity, obj in settings.lxd_objects():
        if entity == args["entity"]:
            lxd.ensure_cluster_object(entity, obj)
    return {}


STEPS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "start": step_start,
    "sign": step_sign,
    "bootstrap": step_bootstrap,
    "token": step_token,
    "join": step_join,
    "central": step_central,
    "chassis": step_chassis,
    "ceph": step_ceph,
    "ceph-client": step_ceph_client,
    "member": step_member,
    "objects": step_objects,
}


def main(argv: list[str]) -> int:
    """``plain.py STEP`` or ``plain.py derive CHARM``: JSON on stdin, JSON result printed."""
    if len(argv) == 2 and argv[0] == "derive":
        result = derive(argv[1], json.load(sys.stdin))
    elif len(argv) == 1 and argv[0] in STEPS:
        result = STEPS[argv[0]](json.load(sys.stdin))
    else:
        print(f"usage: plain.py {{{','.join(STEPS)}}} | derive CHARM < ARGS.json", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
