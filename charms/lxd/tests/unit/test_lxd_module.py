"""Unit tests of the LXD workload module (``src/lxd.py``), without a real daemon.

The ``LXD`` class is driven through pylxd's real ``_APINode`` tree over a fake HTTP session
(:class:`FakeSession`): every request is recorded as (METHOD, path, kwargs) and answered from
canned LXD responses, so pylxd's own status-code handling (errors -> ``LXDAPIException``) runs
exactly as it does against a daemon.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pylxd
import pylxd.exceptions
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pylxd.client import _APINode

import lxd
from charm_common import certs
from charm_common.certs import InvalidCertificateError
from charm_common.lxd_member import LXDObject
from lxd import (
    LXD,
    InvalidPreseedError,
    JoinToken,
    JoinTokenError,
    LXDAPIError,
    LXDError,
    LXDNotFoundError,
    LXDPaths,
    LXDUnavailableError,
    Member,
    MemberConfigKey,
    MemberNotEmptyError,
    ObjectPendingError,
    ObjectRefusedError,
    ObjectState,
    ObjectUpdateRefusedError,
    Profile,
    ServerInfo,
    SoleDatabaseMemberError,
    member_values_from_objects,
    needs_member_stage,
)

# ---------------------------------------------------------------------------- fakes

BASE = "http+unix://%2Fvar%2Flib%2Flxd%2Funix.socket"
TIMEOUT = 30


class FakeResponse:
    """What a ``requests`` response looks like to pylxd and to ``lxd.py``."""

    def __init__(self, status_code: int, body: Any):
        self.status_code = status_code
        self._body = body
        raw = body if isinstance(body, str) else json.dumps(body)
        self.content = raw.encode()

    def json(self) -> Any:
        if isinstance(self._body, str):
            raise ValueError("not JSON")
        return self._body


def sync(metadata: Any) -> FakeResponse:
    """A synchronous LXD answer."""
    return FakeResponse(
        200, {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}
    )


def started(op_id: str, metadata: Any = None) -> FakeResponse:
    """A background operation LXD started (202 Accepted)."""
    return FakeResponse(
        202,
        {
            "type": "async",
            "status": "Operation created",
            "status_code": 100,
            "operation": f"/1.0/operations/{op_id}",
            "metadata": metadata,
        },
    )


def op_done(metadata: Any = None) -> FakeResponse:
    """``GET /1.0/operations/<id>/wait`` of an operation that succeeded."""
    return sync({"status": "Success", "status_code": 200, "err": "", "metadata": metadata})


def op_failed(err: str, status: str = "Failure") -> FakeResponse:
    """``GET /1.0/operations/<id>/wait`` of an operation that failed."""
    return sync({"status": status, "status_code": 400, "err": err, "metadata": None})


def api_error(code: int, message: str) -> FakeResponse:
    """An LXD error answer."""
    return FakeResponse(code, {"type": "error", "error": message, "error_code": code})


def server(clustered: bool = False, config: dict[str, Any] | None = None) -> FakeResponse:
    """``GET /1.0`` of a daemon."""
    return sync(
        {
            "api_extensions": ["clustering", "clustering_join"],
            "config": config or {},
            "environment": {
                "server_version": "5.21.3",
                "server_clustered": clustered,
                "server_name": "lxd-0" if clustered else "host-a",
                "certificate_fingerprint": "ab" * 32,
            },
        }
    )


class FakeSession:
    """Stands in for pylxd's ``requests`` session: records requests, answers canned ones."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def on(self, method: str, path: str, *replies: Any) -> None:
        """Answer ``method path`` with ``replies`` in turn (the last one repeats).

        A reply is a :class:`FakeResponse` or an exception to raise.
        """
        self.routes[(method, path)] = list(replies)

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every request that is not a GET."""
        return [call for call in self.calls if call[0] != "GET"]

    def paths(self) -> list[tuple[str, str]]:
        """(METHOD, path) of every request, in order."""
        return [(method, path) for method, path, _ in self.calls]

    def _request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        assert url.startswith(BASE), url
        path = url.removeprefix(BASE)
        kwargs.pop("timeout", None)  # pylxd's HTTP timeout, not part of the request
        self.calls.append((method, path, kwargs))
        replies = self.routes.get((method, path))
        if not replies:
            raise AssertionError(f"unexpected request {method} {path}")
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._request("DELETE", url, **kwargs)


@pytest.fixture
def api() -> FakeSession:
    return FakeSession()


@pytest.fixture
def paths(tmp_path) -> LXDPaths:
    return LXDPaths(
        lxd_dir=str(tmp_path / "lxd"),
        lxd_binary="/usr/bin/lxd",
        ceph_dir=str(tmp_path / "ceph"),
        ovn_dir=str(tmp_path / "ovn"),
    )


@pytest.fixture
def daemon(paths, api) -> LXD:
    """An ``LXD`` whose client talks to ``api`` through pylxd's real API tree."""
    client = LXD(paths, timeout=TIMEOUT)
    client._client = SimpleNamespace(api=_APINode(f"{BASE}/1.0", api, timeout=TIMEOUT))
    return client


def _self_signed(common_name: str) -> str:
    return certs.client_certificate(common_name)[1]


@pytest.fixture(scope="module")
def cluster_pem() -> str:
    """The certificate a genuine cluster serves."""
    return _self_signed("lxd-cluster")


@pytest.fixture(scope="module")
def other_pem() -> str:
    """The certificate some other server serves."""
    return _self_signed("impostor")


def sha256_of(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


@pytest.fixture
def serving(monkeypatch):
    """Make ``served_certificate`` answer from a dict address -> PEM (missing: unreachable)."""
    served: dict[str, str] = {}
    asked: list[str] = []

    def fake(address: str, timeout: float = 10.0) -> str:
        asked.append(address)
        if address not in served:
            raise LXDUnavailableError(f"cannot reach {address}: refused")
        return served[address]

    monkeypatch.setattr(lxd, "served_certificate", fake)
    return SimpleNamespace(certs=served, asked=asked)


@pytest.fixture
def run(monkeypatch):
    """Record ``subprocess.run`` calls of ``lxd init``; answer with ``run.result``."""
    calls: list[tuple[list[str], dict[str, Any]]] = []
    state = SimpleNamespace(
        calls=calls, result=subprocess.CompletedProcess([], 0, stdout="", stderr="")
    )

    def fake(argv, **kwargs):
        calls.append((argv, kwargs))
        return state.result

    monkeypatch.setattr(lxd.subprocess, "run", fake)
    return state


# ---------------------------------------------------------------------------- pure helpers


def test_member_name_for_unit():
    assert lxd.member_name_for_unit("lxd/12") == "lxd-12"


def test_join_token_encodes_to_lxds_wire_format():
    # GIVEN a token
    token = JoinToken("lxd-1", "ab12", ("10.0.0.1:8443", "10.0.0.2:8443"), "s3cret", "2030-01-01")

    # WHEN it is encoded
    encoded = token.encode()

    # THEN it is base64 of the JSON LXD prints for `lxc cluster add`
    assert json.loads(base64.b64decode(encoded)) == {
        "server_name": "lxd-1",
        "fingerprint": "ab12",
        "addresses": ["10.0.0.1:8443", "10.0.0.2:8443"],
        "secret": "s3cret",
        "expires_at": "2030-01-01",
    }
    assert JoinToken.decode(encoded) == token


def test_join_token_decode_lowercases_fingerprint_and_defaults_expiry():
    # GIVEN a token from an LXD that has no expiry field and prints an upper-case fingerprint
    raw = {"server_name": "lxd-1", "fingerprint": "ABCDEF", "addresses": ["h:1"], "secret": "x"}
    encoded = base64.b64encode(json.dumps(raw).encode()).decode()

    # WHEN it is decoded
    token = JoinToken.decode(encoded)

    # THEN
    assert token == JoinToken("lxd-1", "abcdef", ("h:1",), "x", "")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("not base64!", id="not-base64"),
        pytest.param(_b64("{not json"), id="not-json"),
        pytest.param(_b64('{"server_name": "a", "addresses": [], "secret": "s"}'), id="no-fp"),
        pytest.param(_b64('["a", "b"]'), id="json-list"),
        pytest.param(
            _b64('{"server_name": "a", "fingerprint": "f", "addresses": 1, "secret": "s"}'),
            id="addresses-not-a-list",
        ),
    ],
)
def test_join_token_decode_rejects_malformed_tokens(encoded):
    with pytest.raises(JoinTokenError, match="^malformed join token: "):
        JoinToken.decode(encoded)


def test_certificate_fingerprint_is_sha256_of_der(cluster_pem, other_pem):
    # WHEN / THEN: the fingerprint LXD prints (lowercase hex SHA-256 of the DER certificate)
    assert lxd.certificate_fingerprint(cluster_pem) == sha256_of(cluster_pem)
    assert len(lxd.certificate_fingerprint(cluster_pem)) == 64
    assert lxd.certificate_fingerprint(cluster_pem) != lxd.certificate_fingerprint(other_pem)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.2:8443", ("127.0.0.2", 8443)),
        ("[fd00::1]:8443", ("fd00::1", 8443)),
        ("lxd-0.example:9443", ("lxd-0.example", 9443)),
    ],
)
def test_split_address(address, expected):
    assert lxd.split_address(address) == expected


@pytest.mark.parametrize("text", ["", "   \n"])
def test_parse_preseed_empty_is_empty_mapping(text):
    assert lxd.parse_preseed(text) == {}


def test_parse_preseed_returns_the_mapping():
    # GIVEN a preseed with every key the operator may set
    text = (
        "config: {images.auto_update_interval: '6'}\n"
        "networks: [{name: lxdbr0, type: bridge}]\n"
        "storage_pools: [{name: local, driver: zfs}]\n"
        "profiles: [{name: default}]\n"
        "projects: [{name: dev}]\n"
    )

    # WHEN / THEN
    assert lxd.parse_preseed(text) == {
        "config": {"images.auto_update_interval": "6"},
        "networks": [{"name": "lxdbr0", "type": "bridge"}],
        "storage_pools": [{"name": "local", "driver": "zfs"}],
        "profiles": [{"name": "default"}],
        "projects": [{"name": "dev"}],
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("config: [unclosed", "not valid YAML (ParserError)"),
        ("- a\n- b\n", "must be a YAML mapping"),
        (
            "cluster: {enabled: true}\nbogus: 1\n",
            "unsupported key(s) bogus, cluster; allowed: config, networks, profiles, projects,"
            " storage_pools (clustering is managed by the charm)",
        ),
        ("storage_pools: {name: x}\n", "'storage_pools' must be a list of mappings with a 'name'"),
        ("networks: [{type: bridge}]\n", "'networks' must be a list of mappings with a 'name'"),
        ("profiles: [default]\n", "'profiles' must be a list of mappings with a 'name'"),
        ("config: [a, b]\n", "'config' must be a mapping"),
        (
            "storage_pools: [{name: fast}]\n",
            "'storage_pools' entry 'fast' has no 'driver'",
        ),
        (
            "config: {core.https_address: '10.0.0.1:9443', images.auto_update_interval: 6}\n",
            "'config' sets core.https_address, which the charm sets from the api binding, "
            "api-port and metrics-port: remove it",
        ),
        ("config: {a: [1]}\n", "'config' must map keys to plain values"),
        (
            "networks: [{name: br0, config: [x]}]\n",
            "'networks' entry 'br0': 'config' must be a mapping",
        ),
        (
            "profiles: [{name: p, devices: {eth0: {nictype: {x: 1}}}}]\n",
            "'profiles' entry 'p': device 'eth0' must map keys to plain values",
        ),
        (
            "profiles: [{name: p, devices: [eth0]}]\n",
            "'profiles' entry 'p': 'devices' must be a mapping",
        ),
    ],
)
def test_parse_preseed_rejects(text, message):
    with pytest.raises(InvalidPreseedError) as exc_info:
        lxd.parse_preseed(text)
    assert str(exc_info.value) == message


DEFAULT_POOLS = [{"name": "default", "driver": "dir"}]
DEFAULT_PROFILES = [
    {"name": "default", "devices": {"root": {"path": "/", "pool": "default", "type": "disk"}}}
]


def test_build_preseed_first_member_defaults():
    # WHEN the first member's preseed is built from an empty operator preseed
    preseed = lxd.build_preseed({}, https_address="10.0.0.1:8443", member_name="lxd-0")

    # THEN it has the address, a dir pool, a default profile on it, and clustering
    assert preseed == {
        "config": {"core.https_address": "10.0.0.1:8443"},
        "storage_pools": DEFAULT_POOLS,
        "profiles": DEFAULT_PROFILES,
        "cluster": {"server_name": "lxd-0", "enabled": True},
    }


def test_build_preseed_separate_cluster_address():
    preseed = lxd.build_preseed(
        {}, https_address="10.0.0.1:8443", member_name="lxd-0", cluster_address="10.1.0.1:8443"
    )
    assert preseed["config"] == {
        "core.https_address": "10.0.0.1:8443",
        "cluster.https_address": "10.1.0.1:8443",
    }


def test_build_preseed_same_cluster_address_is_not_repeated():
    preseed = lxd.build_preseed(
        {}, https_address="10.0.0.1:8443", member_name="lxd-0", cluster_address="10.0.0.1:8443"
    )
    assert preseed["config"] == {"core.https_address": "10.0.0.1:8443"}


def test_build_preseed_standalone_has_no_cluster():
    # WHEN a standalone preseed is built (even with a cluster address at hand)
    preseed = lxd.build_preseed(
        {}, https_address="10.0.0.1:8443", member_name=None, cluster_address="10.1.0.1:8443"
    )

    # THEN nothing about clustering is in it
    assert preseed == {
        "config": {"core.https_address": "10.0.0.1:8443"},
        "storage_pools": DEFAULT_POOLS,
        "profiles": DEFAULT_PROFILES,
    }


def test_build_preseed_keeps_operator_pools_and_profiles_without_mutating_them():
    # GIVEN an operator preseed with its own pool (and config) but no profiles
    user = {
        "config": {"core.https_address": "ignored:1", "images.auto_update_interval": "6"},
        "storage_pools": [{"name": "fast", "driver": "zfs", "config": {"size": "30GiB"}}],
    }
    snapshot = json.loads(json.dumps(user))

    # WHEN
    preseed = lxd.build_preseed(user, https_address="10.0.0.1:8443", member_name="lxd-0")

    # THEN the pool is kept, the default profile's root disk uses it, the address is the charm's
    assert preseed["storage_pools"] == snapshot["storage_pools"]
    assert preseed["profiles"] == [
        {"name": "default", "devices": {"root": {"path": "/", "pool": "fast", "type": "disk"}}}
    ]
    assert preseed["config"] == {
        "core.https_address": "10.0.0.1:8443",
        "images.auto_update_interval": "6",
    }
    assert user == snapshot


def test_build_preseed_keeps_operator_profiles():
    profiles = [{"name": "default", "devices": {}}]
    preseed = lxd.build_preseed({"profiles": profiles}, https_address="a:1", member_name=None)
    assert preseed["profiles"] == profiles


def test_member_values_of_preseed_objects_only_member_specific_keys():
    # GIVEN a preseed with member-specific and cluster-wide keys
    preseed = {
        "storage_pools": [
            {
                "name": "local",
                "driver": "zfs",
                "config": {"source": "/dev/sdb", "size": 30, "zfs.clone_copy": "false"},
            },
            {"name": "default", "driver": "dir"},
            {"name": "none", "config": None},
        ],
        "networks": [
            {"name": "br0", "config": {"bridge.external_interfaces": "eth1", "ipv4.nat": "true"}}
        ],
    }

    # WHEN / THEN values are strings keyed (entity, name, key)
    assert lxd.member_values_from_objects(lxd.preseed_objects(preseed)) == {
        ("storage-pool", "local", "source"): "/dev/sdb",
        ("storage-pool", "local", "size"): "30",
        ("network", "br0", "bridge.external_interfaces"): "eth1",
    }


def test_preseed_objects_networks_then_pools_with_lxd_values():
    # GIVEN a preseed with YAML scalars of every kind, and a network without a type
    preseed = lxd.parse_preseed(
        "storage_pools: [{name: local, driver: zfs, description: fast,"
        " config: {source: /dev/sdb, zfs.clone_copy: false, volume.size: 10}}]\n"
        "networks: [{name: br0, config: {ipv4.nat: true, bridge.external_interfaces: eth1}}]\n"
        "config: {images.auto_update_interval: 6, core.trust_password: secret}\n"
    )

    # WHEN / THEN strings as LXD's API takes them, member-specific keys apart
    assert lxd.preseed_objects(preseed) == [
        (
            "network",
            LXDObject(
                "br0", "bridge", {"ipv4.nat": "true"}, {"bridge.external_interfaces": "eth1"}
            ),
        ),
        (
            "storage-pool",
            LXDObject(
                "local",
                "zfs",
                {"zfs.clone_copy": "false", "volume.size": "10"},
                {"source": "/dev/sdb"},
                "fast",
            ),
        ),
    ]
    assert lxd.preseed_server_config(preseed) == {
        "images.auto_update_interval": "6",
        "core.trust_password": "secret",
    }


def test_preseed_profiles():
    preseed = lxd.parse_preseed(
        "profiles:\n"
        "- {name: lab, description: small, config: {limits.cpu: 1},"
        " devices: {eth0: {type: nic, network: br0}}}\n"
        "- {name: bare}\n"
    )

    assert lxd.preseed_profiles(preseed) == [
        Profile("lab", {"limits.cpu": "1"}, {"eth0": {"type": "nic", "network": "br0"}}, "small"),
        Profile("bare"),
    ]


def test_fill_member_config_every_asked_key_then_our_other_values():
    keys = [
        MemberConfigKey("storage-pool", "local", "source", "pool source"),
        MemberConfigKey("storage-pool", "default", "source"),
    ]
    values = {
        ("storage-pool", "local", "source"): "/dev/sdb",
        ("network", "UPLINK", "parent"): "br-uplink",  # created after the token was issued
    }

    assert lxd.fill_member_config(keys, values) == [
        {"entity": "storage-pool", "name": "local", "key": "source", "value": "/dev/sdb"},
        {"entity": "storage-pool", "name": "default", "key": "source", "value": ""},
        {"entity": "network", "name": "UPLINK", "key": "parent", "value": "br-uplink"},
    ]


def test_served_certificate_asks_host_and_port(monkeypatch):
    # GIVEN a TLS endpoint serving a certificate
    asked = []

    def fake(addr, timeout):
        asked.append((addr, timeout))
        return "PEM"

    monkeypatch.setattr(lxd.ssl, "get_server_certificate", fake)

    # WHEN / THEN
    assert lxd.served_certificate("[fd00::1]:8443", timeout=3.0) == "PEM"
    assert asked == [(("fd00::1", 8443), 3.0)]


def test_served_certificate_unreachable(monkeypatch):
    def fake(addr, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(lxd.ssl, "get_server_certificate", fake)

    with pytest.raises(LXDUnavailableError, match=r"^cannot reach 10\.0\.0\.1:8443: .*refused"):
        lxd.served_certificate("10.0.0.1:8443")


def _token(cluster_pem: str, *addresses: str, name: str = "lxd-1") -> JoinToken:
    return JoinToken(name, lxd.certificate_fingerprint(cluster_pem), addresses, "s3cret")


def test_verified_cluster_certificate_refuses_token_for_another_member(serving, cluster_pem):
    token = _token(cluster_pem, "10.0.0.1:8443", name="lxd-2")

    with pytest.raises(JoinTokenError, match="is for member 'lxd-2', not 'lxd-1'"):
        lxd.verified_cluster_certificate(token, "lxd-1")
    assert serving.asked == []


def test_verified_cluster_certificate_skips_unreachable_addresses(serving, cluster_pem):
    # GIVEN the first address does not answer, the second serves the cluster certificate
    serving.certs["10.0.0.2:8443"] = cluster_pem
    token = _token(cluster_pem, "10.0.0.1:8443", "10.0.0.2:8443")

    # WHEN / THEN the second address and its certificate are returned
    assert lxd.verified_cluster_certificate(token, "lxd-1") == ("10.0.0.2:8443", cluster_pem)
    assert serving.asked == ["10.0.0.1:8443", "10.0.0.2:8443"]


def test_verified_cluster_certificate_refuses_other_certificate(serving, cluster_pem, other_pem):
    # GIVEN every address serves a certificate other than the token's
    serving.certs.update({"10.0.0.1:8443": other_pem, "10.0.0.2:8443": other_pem})
    token = _token(cluster_pem, "10.0.0.1:8443", "10.0.0.2:8443")
    served = lxd.certificate_fingerprint(other_pem)[:12]

    # WHEN / THEN
    with pytest.raises(JoinTokenError) as exc_info:
        lxd.verified_cluster_certificate(token, "lxd-1")
    assert str(exc_info.value) == (
        f"join token fingerprint {token.fingerprint[:12]} does not match the cluster "
        f"(10.0.0.1:8443 serves {served}, 10.0.0.2:8443 serves {served}); refusing to join"
    )


def test_verified_cluster_certificate_nobody_answers(serving, cluster_pem):
    token = _token(cluster_pem, "10.0.0.1:8443", "10.0.0.2:8443")

    with pytest.raises(LXDUnavailableError) as exc_info:
        lxd.verified_cluster_certificate(token, "lxd-1")
    assert not isinstance(exc_info.value, JoinTokenError)
    assert str(exc_info.value) == "no cluster member answers at 10.0.0.1:8443, 10.0.0.2:8443"


def test_member_states():
    assert Member("a", "", "Online").online
    assert not Member("a", "", "Online").evacuated
    assert Member("a", "", "EVACUATED").evacuated
    assert not Member("a", "", "Offline").online


# ---------------------------------------------------------------------------- connection


def test_client_without_socket_is_unavailable(paths):
    with pytest.raises(LXDUnavailableError, match=f"^no socket at {paths.socket}$"):
        _ = LXD(paths).client


def test_client_socket_not_answering_is_unavailable(paths):
    # GIVEN a socket path that exists but nothing listens on (a plain file)
    os.makedirs(paths.lxd_dir)
    open(paths.socket, "w").close()

    # WHEN / THEN the real pylxd client fails to connect, which is "unavailable"
    with pytest.raises(LXDUnavailableError, match="^LXD is not answering: "):
        _ = LXD(paths, timeout=2).client


def test_client_connects_once_over_the_socket(paths, monkeypatch):
    # GIVEN a socket and a pylxd that connects
    os.makedirs(paths.lxd_dir)
    open(paths.socket, "w").close()
    made = []

    def fake_client(**kwargs):
        made.append(kwargs)
        return SimpleNamespace(api=None)

    monkeypatch.setattr(lxd.pylxd, "Client", fake_client)
    daemon = LXD(paths, timeout=12.5)

    # WHEN the client is used twice
    first, second = daemon.client, daemon.client

    # THEN it was made once, on the socket, with our timeout
    assert first is second
    assert made == [{"endpoint": paths.socket, "timeout": 12.5}]


def test_client_error_answer_while_connecting_is_an_lxd_error(paths, monkeypatch):
    os.makedirs(paths.lxd_dir)
    open(paths.socket, "w").close()

    def fake_client(**kwargs):
        raise pylxd.exceptions.LXDAPIException(api_error(500, "daemon is starting"))

    monkeypatch.setattr(lxd.pylxd, "Client", fake_client)

    with pytest.raises(LXDError):
        _ = LXD(paths).client


# ---------------------------------------------------------------------------- low level


def test_api_error_becomes_lxd_error_with_lxds_message(daemon, api):
    api.on("GET", "/1.0/cluster", api_error(403, "not authorized"))

    with pytest.raises(LXDError) as exc_info:
        daemon.member_config()
    # a refusal, not "unavailable" (the charm waits on that) nor "not found"
    assert type(exc_info.value) is LXDAPIError
    assert str(exc_info.value) == "GET /1.0/cluster: not authorized"
    assert exc_info.value.reason == "not authorized"


def test_api_error_without_json_uses_the_body(daemon, api):
    api.on("GET", "/1.0/cluster", FakeResponse(502, "bad gateway"))

    with pytest.raises(LXDError, match="^GET /1.0/cluster: bad gateway$"):
        daemon.member_config()


def test_connection_error_is_unavailable(daemon, api):
    api.on("GET", "/1.0", requests.ConnectionError("socket closed"))

    with pytest.raises(LXDUnavailableError, match="^LXD is not answering: socket closed$"):
        daemon.server_info()


def test_failed_operation_is_an_lxd_error(daemon, api):
    # GIVEN an evacuation LXD starts but fails
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync([{"server_name": "lxd-1", "status": "Online"}]))
    api.on("GET", "/1.0/instances", sync([]))
    api.on("POST", "/1.0/cluster/members/lxd-1/state", started("op1"))
    api.on("GET", "/1.0/operations/op1/wait", op_failed("Failed to migrate c1"))

    # WHEN / THEN
    with pytest.raises(LXDError) as exc_info:
        daemon.evacuate_member("lxd-1")
    assert str(exc_info.value) == "POST /1.0/cluster/members/lxd-1/state: Failed to migrate c1"
    assert api.calls[-1] == ("GET", "/1.0/operations/op1/wait", {"params": {"timeout": TIMEOUT}})


def test_failed_operation_without_error_text_reports_status(daemon, api):
    api.on("DELETE", "/1.0/operations/tok", started("op2"))
    api.on(
        "GET",
        "/1.0/operations",
        sync(
            {
                "running": [
                    {
                        "id": "tok",
                        "class": "token",
                        "status_code": 103,
                        "metadata": {"serverName": "a"},
                    }
                ]
            }
        ),
    )
    api.on("GET", "/1.0/operations/op2/wait", op_failed("", status="Cancelled"))

    with pytest.raises(LXDError, match="^DELETE /1.0/operations/tok: Cancelled$"):
        daemon.revoke_join_token("a")


def test_operation_wait_error_is_an_lxd_error(daemon, api):
    api.on("PATCH", "/1.0", started("gone"))
    api.on("GET", "/1.0", server())
    api.on("GET", "/1.0/operations/gone/wait", api_error(404, "Operation not found"))

    with pytest.raises(LXDError, match="^PATCH /1.0/: Operation not found$"):
        daemon.update_server_config({"core.https_address": "10.0.0.1:8443"})


def test_operation_wait_connection_error_is_unavailable(daemon, api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync([{"server_name": "lxd-1", "status": "Online"}]))
    api.on("GET", "/1.0/instances", sync([]))
    api.on("POST", "/1.0/cluster/members/lxd-1/state", started("op1"))
    api.on("GET", "/1.0/operations/op1/wait", requests.ReadTimeout("read timed out"))

    with pytest.raises(LXDUnavailableError):
        daemon.evacuate_member("lxd-1")


def test_operation_still_running_after_one_wait_is_waited_for_again(daemon, api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync([{"server_name": "lxd-1", "status": "Online"}]))
    api.on("GET", "/1.0/instances", sync([]))
    api.on("POST", "/1.0/cluster/members/lxd-1/state", started("op1"))
    running = sync({"status": "Running", "status_code": 103, "err": "", "metadata": None})
    api.on("GET", "/1.0/operations/op1/wait", running, op_done())

    assert daemon.evacuate_member("lxd-1") is True


def test_wait_ready_retries_until_the_daemon_answers(daemon, api):
    # GIVEN a daemon that refuses the first connection
    api.on("GET", "/1.0", requests.ConnectionError("refused"), server(clustered=True))

    # WHEN / THEN
    info = daemon.wait_ready(timeout=10)
    assert info.clustered is True
    assert api.paths() == [("GET", "/1.0"), ("GET", "/1.0")]


# ---------------------------------------------------------------------------- state


def test_server_info(daemon, api):
    api.on("GET", "/1.0", server(clustered=True, config={"core.https_address": "10.0.0.1:8443"}))

    assert daemon.server_info() == ServerInfo(
        version="5.21.3",
        api_extensions=["clustering", "clustering_join"],
        clustered=True,
        server_name="lxd-0",
        certificate_fingerprint="ab" * 32,
        config={"core.https_address": "10.0.0.1:8443"},
    )


def test_server_info_is_read_once_until_this_client_changes_the_server(daemon, api):
    daemon._keep_info = True  # as the charm's client of one hook
    before = server(config={"core.https_address": "10.0.0.1:8443"})
    after = server(config={"core.https_address": "10.0.0.2:8443"})
    api.on("GET", "/1.0", before, after)
    api.on("PATCH", "/1.0", sync(None))

    first = daemon.server_info()
    assert daemon.server_info() is first
    assert api.paths() == [("GET", "/1.0")]

    assert daemon.update_server_config({"core.https_address": "10.0.0.2:8443"})
    assert daemon.server_info().config == {"core.https_address": "10.0.0.2:8443"}
    assert daemon.server_info(refresh=True).config == {"core.https_address": "10.0.0.2:8443"}
    assert api.paths() == [("GET", "/1.0"), ("PATCH", "/1.0"), ("GET", "/1.0"), ("GET", "/1.0")]


def test_a_long_lived_client_reads_server_info_at_every_call(daemon, api):
    api.on("GET", "/1.0", server(clustered=True), server(clustered=False))

    assert daemon.server_info().clustered is True
    assert daemon.server_info().clustered is False  # changed by another client meanwhile


def test_a_preseed_makes_server_info_read_again(daemon, api, run):
    daemon._keep_info = True
    api.on("GET", "/1.0", server(clustered=False), server(clustered=True))
    assert daemon.server_info().clustered is False

    daemon.apply_preseed({"cluster": {"enabled": True}})

    assert daemon.server_info().clustered is True


def test_server_info_of_a_minimal_answer(daemon, api):
    api.on("GET", "/1.0", sync({"config": None}))

    assert daemon.server_info() == ServerInfo("", [], False, "", "", {})


@pytest.mark.parametrize(
    "clustered, config, expected",
    [
        (True, {}, True),
        (False, {"core.https_address": "10.0.0.1:8443"}, True),
        (False, {"images.auto_update_interval": "6"}, False),
    ],
)
def test_is_initialized(daemon, api, clustered, config, expected):
    api.on("GET", "/1.0", server(clustered=clustered, config=config))

    assert daemon.is_initialized() is expected


def test_update_server_config_sends_only_changed_keys(daemon, api):
    # GIVEN a daemon with some config
    api.on(
        "GET",
        "/1.0",
        server(config={"core.https_address": "10.0.0.1:8443", "images.auto_update_interval": "6"}),
    )
    api.on("PATCH", "/1.0", sync({}))

    # WHEN one wanted key is already set and one is not
    changed = daemon.update_server_config(
        {"core.https_address": "10.0.0.1:8443", "core.metrics_address": "10.0.0.1:9100"}
    )

    # THEN only the missing one is patched
    assert changed is True
    assert api.writes() == [
        ("PATCH", "/1.0", {"json": {"config": {"core.metrics_address": "10.0.0.1:9100"}}})
    ]


def test_update_server_config_nothing_to_change(daemon, api):
    api.on("GET", "/1.0", server(config={"core.https_address": "10.0.0.1:8443"}))

    assert (
        daemon.update_server_config(
            {"core.https_address": "10.0.0.1:8443", "core.metrics_address": ""}
        )
        is False
    )
    assert api.writes() == []


# ---------------------------------------------------------------------------- bootstrap


def test_apply_preseed_runs_lxd_init(daemon, run, paths):
    # GIVEN a preseed
    preseed = {"config": {"core.https_address": "10.0.0.1:8443"}, "cluster": {"enabled": True}}

    # WHEN it is applied
    daemon.apply_preseed(preseed)

    # THEN `lxd init --preseed` got it as YAML on stdin, with LXD_DIR set
    [(argv, kwargs)] = run.calls
    assert argv == ["/usr/bin/lxd", "init", "--preseed"]
    assert yaml.safe_load(kwargs["input"]) == preseed
    assert kwargs["env"]["LXD_DIR"] == paths.lxd_dir
    assert "PATH" in kwargs["env"]
    assert kwargs["timeout"] == TIMEOUT
    assert kwargs["check"] is False


def test_apply_preseed_failure_is_an_lxd_error(daemon, run):
    run.result = subprocess.CompletedProcess([], 1, stdout="", stderr="Error: pool exists\n")

    with pytest.raises(LXDError, match="^lxd init --preseed failed: Error: pool exists$"):
        daemon.apply_preseed({})


def test_apply_preseed_timeout_is_an_lxd_error(daemon, monkeypatch):
    def fake(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(lxd.subprocess, "run", fake)

    with pytest.raises(LXDError):
        daemon.apply_preseed({})


def test_bootstrap_cluster_when_already_clustered(daemon, api, run):
    api.on("GET", "/1.0", server(clustered=True))

    assert daemon.bootstrap_cluster("lxd-0", "10.0.0.1:8443", {}) is False
    assert run.calls == []


def test_bootstrap_cluster_applies_a_cluster_preseed(daemon, api, run):
    # GIVEN an unclustered daemon
    api.on("GET", "/1.0", server())

    # WHEN
    created = daemon.bootstrap_cluster(
        "lxd-0",
        "10.0.0.1:8443",
        {"config": {"images.auto_update_interval": "0"}},
        cluster_address="10.1.0.1:8443",
    )

    # THEN the preseed creates a cluster named after this member
    assert created is True
    [(argv, kwargs)] = run.calls
    assert yaml.safe_load(kwargs["input"]) == {
        "config": {
            "images.auto_update_interval": "0",
            "core.https_address": "10.0.0.1:8443",
            "cluster.https_address": "10.1.0.1:8443",
        },
        "storage_pools": DEFAULT_POOLS,
        "profiles": DEFAULT_PROFILES,
        "cluster": {"server_name": "lxd-0", "enabled": True},
    }


def test_init_standalone_when_already_set_up(daemon, api, run):
    api.on("GET", "/1.0", server(config={"core.https_address": "10.0.0.1:8443"}))

    assert daemon.init_standalone("10.0.0.1:8443", {}) is False
    assert run.calls == []


def test_init_standalone_applies_a_standalone_preseed(daemon, api, run):
    api.on("GET", "/1.0", server())

    assert daemon.init_standalone("10.0.0.1:8443", {}) is True
    [(argv, kwargs)] = run.calls
    assert yaml.safe_load(kwargs["input"]) == {
        "config": {"core.https_address": "10.0.0.1:8443"},
        "storage_pools": DEFAULT_POOLS,
        "profiles": DEFAULT_PROFILES,
    }


# ---------------------------------------------------------------------------- tokens


def _token_op(op_id: str, member: str, status_code: int = 103, cls: str = "token") -> dict:
    return {
        "id": op_id,
        "class": cls,
        "status_code": status_code,
        "metadata": {"serverName": member},
    }


def test_pending_join_tokens_lists_running_token_operations(daemon, api):
    # GIVEN running tokens for lxd-2 and lxd-1, a used token for lxd-3 and another task
    api.on(
        "GET",
        "/1.0/operations",
        sync(
            {
                "running": [
                    _token_op("t2", "lxd-2"),
                    _token_op("t1", "lxd-1"),
                    _token_op("x", "lxd-4", cls="task"),
                ],
                "success": [_token_op("t3", "lxd-3", status_code=200)],
            }
        ),
    )

    # WHEN / THEN
    assert daemon.pending_join_tokens() == ["lxd-1", "lxd-2"]
    assert api.calls == [("GET", "/1.0/operations", {"params": {"recursion": "1"}})]


def test_pending_join_tokens_without_operations(daemon, api):
    api.on("GET", "/1.0/operations", sync(None))

    assert daemon.pending_join_tokens() == []


def test_issue_join_token_revokes_the_older_token_first(daemon, api, cluster_pem):
    # GIVEN an unused token for lxd-1 and one for lxd-2
    api.on(
        "GET",
        "/1.0/operations",
        sync({"running": [_token_op("old1", "lxd-1"), _token_op("old2", "lxd-2")]}),
    )
    api.on("DELETE", "/1.0/operations/old1", sync({}))
    fingerprint = lxd.certificate_fingerprint(cluster_pem)
    api.on(
        "POST",
        "/1.0/cluster/members",
        started(
            "new1",
            {
                "id": "new1",
                "class": "token",
                "status_code": 103,
                "metadata": {
                    "serverName": "lxd-1",
                    "fingerprint": fingerprint,
                    "addresses": ["10.0.0.1:8443"],
                    "secret": "s3cret",
                    "expiresAt": "2030-01-01T00:00:00Z",
                },
            },
        ),
    )

    # WHEN a token is issued for lxd-1
    token = daemon.issue_join_token("lxd-1")

    # THEN lxd-1's old token (only) was cancelled before the new one was made
    assert api.writes() == [
        ("DELETE", "/1.0/operations/old1", {}),
        ("POST", "/1.0/cluster/members", {"json": {"server_name": "lxd-1"}}),
    ]
    assert token == JoinToken(
        "lxd-1", fingerprint, ("10.0.0.1:8443",), "s3cret", "2030-01-01T00:00:00Z"
    )


@pytest.mark.parametrize("name", ["LXD-1", "lxd_1", "-lxd", "lxd-", "", "a" * 64])
def test_issue_join_token_refuses_invalid_member_names(daemon, api, name):
    with pytest.raises(LXDError, match="^invalid member name "):
        daemon.issue_join_token(name)
    assert api.calls == []


def test_issue_join_token_api_error(daemon, api):
    api.on("GET", "/1.0/operations", sync({}))
    api.on("POST", "/1.0/cluster/members", api_error(400, "member name already in use"))

    with pytest.raises(LXDError, match="^cannot issue a join token: member name already in use$"):
        daemon.issue_join_token("lxd-1")


def test_issue_join_token_connection_error_is_unavailable(daemon, api):
    api.on("GET", "/1.0/operations", sync({}))
    api.on("POST", "/1.0/cluster/members", requests.ConnectionError("socket closed"))

    with pytest.raises(LXDUnavailableError):
        daemon.issue_join_token("lxd-1")


def test_revoke_join_token_without_tokens(daemon, api):
    api.on("GET", "/1.0/operations", sync({"running": [_token_op("t2", "lxd-2")]}))

    assert daemon.revoke_join_token("lxd-1") is False
    assert api.writes() == []


def test_revoke_join_token_cancels_every_token_of_the_member(daemon, api):
    api.on(
        "GET",
        "/1.0/operations",
        sync(
            {
                "running": [
                    _token_op("a", "lxd-1"),
                    _token_op("b", "lxd-1"),
                    _token_op("c", "lxd-2"),
                ]
            }
        ),
    )
    api.on("DELETE", "/1.0/operations/a", sync({}))
    api.on("DELETE", "/1.0/operations/b", sync({}))

    assert daemon.revoke_join_token("lxd-1") is True
    assert api.paths()[1:] == [("DELETE", "/1.0/operations/a"), ("DELETE", "/1.0/operations/b")]


def test_member_config(daemon, api):
    api.on(
        "GET",
        "/1.0/cluster",
        sync(
            {
                "enabled": True,
                "member_config": [
                    {
                        "entity": "storage-pool",
                        "name": "local",
                        "key": "source",
                        "description": '"source" property for storage pool "local"',
                    },
                    {"entity": "network", "name": "br0", "key": "bridge.external_interfaces"},
                ],
            }
        ),
    )

    assert daemon.member_config() == [
        MemberConfigKey(
            "storage-pool", "local", "source", '"source" property for storage pool "local"'
        ),
        MemberConfigKey("network", "br0", "bridge.external_interfaces", ""),
    ]


def test_member_config_of_a_standalone_server(daemon, api):
    api.on("GET", "/1.0/cluster", sync({"enabled": False, "member_config": None}))

    assert daemon.member_config() == []


# ---------------------------------------------------------------------------- join

MEMBER_CONFIG = [{"entity": "storage-pool", "name": "default", "key": "source", "value": ""}]


def test_join_cluster_when_already_clustered(daemon, api, serving, cluster_pem):
    api.on("GET", "/1.0", server(clustered=True))

    joined = daemon.join_cluster(
        _token(cluster_pem, "10.0.0.1:8443"), "lxd-1", "10.0.0.2:8443", MEMBER_CONFIG
    )

    assert joined is False
    assert serving.asked == []
    assert api.writes() == []


def test_join_cluster_refuses_a_cluster_with_another_certificate(
    daemon, api, serving, cluster_pem, other_pem
):
    # GIVEN the token's address serves a certificate other than the token names
    api.on("GET", "/1.0", server())
    serving.certs["10.0.0.1:8443"] = other_pem

    # WHEN / THEN joining is refused and nothing is sent to the local daemon
    with pytest.raises(JoinTokenError, match="does not match the cluster"):
        daemon.join_cluster(
            _token(cluster_pem, "10.0.0.1:8443"), "lxd-1", "10.0.0.2:8443", MEMBER_CONFIG
        )
    assert api.writes() == []


def test_join_cluster_sends_the_whole_token_and_certificate(daemon, api, serving, cluster_pem):
    # GIVEN an unclustered daemon and a token whose address serves the cluster certificate
    api.on("GET", "/1.0", server())
    api.on("PATCH", "/1.0", sync({}))
    api.on("PUT", "/1.0/cluster", started("join"))
    api.on("GET", "/1.0/operations/join/wait", op_done())
    serving.certs["10.0.0.1:8443"] = cluster_pem
    token = _token(cluster_pem, "10.0.0.9:8443", "10.0.0.1:8443")

    # WHEN it joins
    joined = daemon.join_cluster(token, "lxd-1", "10.0.0.2:8443", MEMBER_CONFIG)

    # THEN it set its address, then asked to join with the verified certificate and token
    assert joined is True
    assert api.writes() == [
        ("PATCH", "/1.0", {"json": {"config": {"core.https_address": "10.0.0.2:8443"}}}),
        (
            "PUT",
            "/1.0/cluster",
            {
                "json": {
                    "server_name": "lxd-1",
                    "enabled": True,
                    "server_address": "10.0.0.2:8443",
                    "cluster_address": "10.0.0.1:8443",
                    "cluster_certificate": cluster_pem,
                    "cluster_password": token.encode(),
                    "member_config": MEMBER_CONFIG,
                }
            },
        ),
    ]
    assert api.calls[-1] == ("GET", "/1.0/operations/join/wait", {"params": {"timeout": TIMEOUT}})


def test_join_cluster_failure_is_an_lxd_error(daemon, api, serving, cluster_pem):
    api.on("GET", "/1.0", server(config={"core.https_address": "10.0.0.2:8443"}))
    api.on("PUT", "/1.0/cluster", started("join"))
    api.on("GET", "/1.0/operations/join/wait", op_failed("Failed to join cluster: bad token"))
    serving.certs["10.0.0.1:8443"] = cluster_pem

    with pytest.raises(LXDError, match="^PUT /1.0/cluster: Failed to join cluster: bad token$"):
        daemon.join_cluster(
            _token(cluster_pem, "10.0.0.1:8443"), "lxd-1", "10.0.0.2:8443", MEMBER_CONFIG
        )
    # the address was already right: no PATCH
    assert [method for method, _, _ in api.writes()] == ["PUT"]


# ---------------------------------------------------------------------------- members

MEMBERS = [
    {
        "server_name": "lxd-0",
        "url": "https://10.0.0.1:8443",
        "status": "Online",
        "roles": ["database-leader", "database"],
        "message": "Fully operational",
    },
    {
        "server_name": "lxd-1",
        "url": "https://10.0.0.2:8443",
        "status": "Evacuated",
        "roles": None,
        "message": "Unavailable due to maintenance",
    },
    {"server_name": "lxd-2", "status": "Offline"},
]
INSTANCES = [
    {"name": "c1", "project": "default", "location": "lxd-1", "status": "Running"},
    {"name": "web", "project": "prod", "location": "lxd-1", "status": "Stopped"},
    {"name": "c2", "location": "lxd-0", "status": "Running"},
]


def test_members_of_a_standalone_server(daemon, api):
    api.on("GET", "/1.0", server())

    assert daemon.members() == []
    assert api.paths() == [("GET", "/1.0")]


def test_members(daemon, api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync(MEMBERS))

    assert daemon.members() == [
        Member(
            "lxd-0",
            "https://10.0.0.1:8443",
            "Online",
            ("database-leader", "database"),
            "Fully operational",
        ),
        Member(
            "lxd-1", "https://10.0.0.2:8443", "Evacuated", (), "Unavailable due to maintenance"
        ),
        Member("lxd-2", "", "Offline", (), ""),
    ]
    assert api.calls[-1] == ("GET", "/1.0/cluster/members", {"params": {"recursion": "1"}})


def test_member_instances_of_one_member_in_every_project(daemon, api):
    api.on("GET", "/1.0/instances", sync(INSTANCES))

    assert daemon.member_instances("lxd-1") == ["default/c1", "prod/web"]
    assert daemon.member_instances("lxd-9") == []
    assert api.calls[0] == (
        "GET",
        "/1.0/instances",
        {"params": {"recursion": "1", "all-projects": "true"}},
    )


def test_instance_locations(daemon, api):
    api.on("GET", "/1.0/instances", sync(INSTANCES + [{"name": "new"}]))

    assert daemon.instance_locations() == {
        "default/c1": ("lxd-1", "Running"),
        "prod/web": ("lxd-1", "Stopped"),
        "default/c2": ("lxd-0", "Running"),
        "default/new": ("", ""),
    }


def test_instance_listing_when_lxd_returns_nothing(daemon, api):
    api.on("GET", "/1.0/instances", sync(None))

    assert daemon.member_instances("lxd-1") == []
    assert daemon.instance_locations() == {}


@pytest.fixture
def cluster(api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync(MEMBERS))
    return api


def test_evacuate_member(daemon, cluster):
    # GIVEN lxd-0 holds no instance (so it needs no other member online)
    cluster.on("GET", "/1.0/instances", sync([i for i in INSTANCES if i["location"] != "lxd-0"]))
    cluster.on("POST", "/1.0/cluster/members/lxd-0/state", started("ev"))
    cluster.on("GET", "/1.0/operations/ev/wait", op_done())

    assert daemon.evacuate_member("lxd-0") is True
    assert cluster.writes() == [
        ("POST", "/1.0/cluster/members/lxd-0/state", {"json": {"action": "evacuate"}})
    ]


def test_evacuate_member_already_evacuated(daemon, cluster):
    cluster.on("GET", "/1.0/operations", sync({"success": [{"id": "old"}]}))

    assert daemon.evacuate_member("lxd-1") is False
    assert cluster.writes() == []
    assert ("GET", "/1.0/operations") in cluster.paths()  # none running: no wait


def test_evacuate_unknown_member(daemon, cluster):
    with pytest.raises(LXDError, match="^'lxd-7' is not a cluster member$"):
        daemon.evacuate_member("lxd-7")


def test_restore_member(daemon, cluster):
    cluster.on("GET", "/1.0/instances", sync(INSTANCES))
    cluster.on("POST", "/1.0/cluster/members/lxd-1/state", started("re"))
    cluster.on("GET", "/1.0/operations/re/wait", op_done())

    assert daemon.restore_member("lxd-1") is True
    assert cluster.writes() == [
        ("POST", "/1.0/cluster/members/lxd-1/state", {"json": {"action": "restore"}})
    ]


def test_start_instance_in_its_project(daemon, cluster):
    cluster.on("PUT", "/1.0/instances/c1/state", started("st"))
    cluster.on("GET", "/1.0/operations/st/wait", op_done())

    daemon.start_instance("web/c1")

    assert cluster.writes() == [
        (
            "PUT",
            "/1.0/instances/c1/state",
            {"params": {"project": "web"}, "json": {"action": "start", "timeout": 60}},
        )
    ]


def test_restore_member_not_evacuated(daemon, cluster):
    assert daemon.restore_member("lxd-0") is False
    assert cluster.writes() == []


# ---------------------------------------------------------------------------- day 2: evacuation

THREE = [
    {"server_name": "lxd-0", "status": "Online", "roles": ["database-leader"]},
    {"server_name": "lxd-1", "status": "Online", "roles": ["database"]},
    {"server_name": "lxd-2", "status": "Online", "roles": ["database"]},
]


def inst(
    name: str,
    location: str,
    status: str = "Running",
    project: str = "default",
    config: dict[str, str] | None = None,
    expanded: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One entry of ``GET /1.0/instances?recursion=1&all-projects=true``."""
    local = dict(config or {})
    return {
        "name": name,
        "project": project,
        "location": location,
        "status": status,
        "config": local,
        "expanded_config": {**local, **(expanded or {})},
    }


def members_api(api: FakeSession, members: list[dict[str, Any]]) -> FakeSession:
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync(members))
    return api


def policy(name: str, value: str, project: str = "default") -> tuple[str, str, dict[str, Any]]:
    """The PATCH that sets (or, with '', removes) an instance's ``cluster.evacuate``."""
    return (
        "PATCH",
        f"/1.0/instances/{name}",
        {"params": {"project": project}, "json": {"config": {"cluster.evacuate": value}}},
    )


EVACUATE = ("POST", "/1.0/cluster/members/lxd-2/state", {"json": {"action": "evacuate"}})


def evacuating(api: FakeSession, before: list[dict], after: list[dict], members=THREE) -> None:
    """lxd-2 is evacuated: the instance listing changes from ``before`` to ``after``."""
    members_api(api, members)
    api.on("GET", "/1.0/instances", sync(before), sync(after))
    api.on("POST", "/1.0/cluster/members/lxd-2/state", started("ev"))
    api.on("GET", "/1.0/operations/ev/wait", op_done())


def test_evacuate_auto_lets_lxd_decide_and_reports_where_instances_went(daemon, api):
    # GIVEN lxd-2 runs c1, and c2 whose profile says cluster.evacuate=stop
    before = [
        inst("c1", "lxd-2"),
        inst("c2", "lxd-2", expanded={"cluster.evacuate": "stop"}),
        inst("web", "lxd-2", "Stopped", project="prod"),
        inst("c3", "lxd-0"),
    ]
    after = [
        inst("c1", "lxd-1"),
        inst("c2", "lxd-2", "Stopped", expanded={"cluster.evacuate": "stop"}),
        inst("web", "lxd-0", "Stopped", project="prod"),
        inst("c3", "lxd-0"),
    ]
    evacuating(api, before, after)

    # WHEN it is evacuated in mode auto
    evacuation = daemon.evacuate("lxd-2")

    # THEN LXD did it alone (no instance was touched) and the result says what happened
    assert api.writes() == [EVACUATE]
    assert evacuation == lxd.Evacuation(
        member="lxd-2",
        moved={"default/c1": "lxd-1", "prod/web": "lxd-0"},
        stopped=("default/c2",),
    )
    assert evacuation.already is False


def test_evacuate_stop_sets_the_policy_meanwhile_and_puts_each_back(daemon, api):
    # GIVEN instances with no policy, their own "migrate", and "stop" already
    before = [
        inst("c1", "lxd-2"),
        inst("c2", "lxd-2", config={"cluster.evacuate": "migrate"}),
        inst("c3", "lxd-2", expanded={"cluster.evacuate": "stop"}),
    ]
    after = [inst(i["name"], "lxd-2", "Stopped", config=i["config"]) for i in before]
    evacuating(api, before, after)
    api.on("PATCH", "/1.0/instances/c1", sync({}))
    api.on("PATCH", "/1.0/instances/c2", started("p2"))
    api.on("GET", "/1.0/operations/p2/wait", op_done())

    # WHEN lxd-2 is evacuated in mode stop
    evacuation = daemon.evacuate("lxd-2", "stop")

    # THEN only the instances LXD would otherwise move were set to stop, and put back after
    assert api.writes() == [
        policy("c1", "stop"),
        policy("c2", "stop"),
        EVACUATE,
        policy("c1", ""),
        policy("c2", "migrate"),
    ]
    assert evacuation == lxd.Evacuation(
        "lxd-2", moved={}, stopped=("default/c1", "default/c2", "default/c3")
    )


def test_evacuate_migrate_moves_even_instances_that_say_stop(daemon, api):
    before = [
        inst("c1", "lxd-2", expanded={"cluster.evacuate": "stop"}),
        inst("web", "lxd-2", project="prod", config={"cluster.evacuate": "stop"}),
        inst("vm", "lxd-2", config={"cluster.evacuate": "live-migrate"}),
        inst("c4", "lxd-2", config={"cluster.evacuate": "migrate"}),
    ]
    after = [
        inst("c1", "lxd-0"),
        inst("web", "lxd-1", project="prod", config={"cluster.evacuate": "stop"}),
        inst("vm", "lxd-0", config={"cluster.evacuate": "live-migrate"}),
        inst("c4", "lxd-1", config={"cluster.evacuate": "migrate"}),
    ]
    evacuating(api, before, after)
    api.on("PATCH", "/1.0/instances/c1", sync({}))
    api.on("PATCH", "/1.0/instances/web", sync({}))

    evacuation = daemon.evacuate("lxd-2", "migrate")

    assert api.writes() == [
        policy("c1", "migrate"),
        policy("web", "migrate", "prod"),
        EVACUATE,
        policy("c1", ""),
        policy("web", "stop", "prod"),
    ]
    assert evacuation.moved == {
        "default/c1": "lxd-0",
        "prod/web": "lxd-1",
        "default/vm": "lxd-0",
        "default/c4": "lxd-1",
    }
    assert evacuation.stopped == ()


NOBODY_ELSE = [
    {"server_name": "lxd-0", "status": "Evacuated", "roles": ["database-leader"]},
    {"server_name": "lxd-1", "status": "Offline", "roles": ["database"]},
    {"server_name": "lxd-2", "status": "Online", "roles": ["database"]},
]


@pytest.mark.parametrize("mode", ["auto", "migrate"])
def test_evacuate_is_refused_when_no_other_member_is_online(daemon, api, mode):
    # GIVEN lxd-2 runs instances and the other members are evacuated or offline
    members_api(api, NOBODY_ELSE)
    api.on(
        "GET",
        "/1.0/instances",
        sync([inst(f"c{n}", "lxd-2") for n in range(1, 5)] + [inst("x", "lxd-0")]),
    )

    # WHEN / THEN it is refused with the reason, and nothing was changed
    with pytest.raises(lxd.EvacuationRefusedError) as exc_info:
        daemon.evacuate("lxd-2", mode)
    assert str(exc_info.value) == (
        "no other cluster member is online to take 4 instance(s) of lxd-2 (default/c1, "
        "default/c2, default/c3, ...); other members: lxd-0 Evacuated, lxd-1 Offline. "
        "Restore a member first, or evacuate with mode=stop to stop the instances in place"
    )
    assert api.writes() == []


@pytest.mark.parametrize(
    ("mode", "before"),
    [
        ("stop", [inst("c1", "lxd-2")]),
        ("auto", [inst("c1", "lxd-2", expanded={"cluster.evacuate": "stop"})]),
        ("auto", []),
        ("migrate", [inst("c1", "lxd-0")]),
    ],
    ids=["mode-stop", "auto-nothing-would-move", "no-instances", "instances-elsewhere"],
)
def test_evacuate_without_other_members_when_nothing_moves(daemon, api, mode, before):
    after = [{**i, "status": "Stopped"} for i in before]
    evacuating(api, before, after, members=NOBODY_ELSE)
    api.on("PATCH", "/1.0/instances/c1", sync({}))

    evacuation = daemon.evacuate("lxd-2", mode)

    assert EVACUATE in api.writes()
    assert evacuation.moved == {}


def test_evacuate_only_the_single_member(daemon, api):
    # GIVEN a cluster of one member with an instance: there is nowhere to go
    members_api(api, [{"server_name": "lxd-2", "status": "Online", "roles": []}])
    api.on("GET", "/1.0/instances", sync([inst("c1", "lxd-2")]))

    with pytest.raises(lxd.EvacuationRefusedError, match="other members: none\\. Restore"):
        daemon.evacuate("lxd-2")


def test_evacuate_unknown_mode_is_a_bug(daemon, api):
    with pytest.raises(ValueError, match="unknown evacuation mode 'live'"):
        daemon.evacuate("lxd-2", "live")
    assert api.calls == []


def test_evacuate_already_evacuated(daemon, cluster):
    evacuation = daemon.evacuate("lxd-1", "stop")

    assert evacuation == lxd.Evacuation("lxd-1", moved={}, already=True)
    assert cluster.writes() == []


def test_evacuate_a_member_that_does_not_exist(daemon, cluster):
    with pytest.raises(LXDError, match="^'lxd-9' is not a cluster member$"):
        daemon.evacuate("lxd-9")


def test_failed_evacuation_puts_the_policies_back(daemon, api):
    # GIVEN an evacuation in mode stop that LXD fails
    evacuating(api, [inst("c1", "lxd-2")], [])
    api.on("PATCH", "/1.0/instances/c1", sync({}))
    api.on("GET", "/1.0/operations/ev/wait", op_failed("Failed to stop instance c1"))

    # WHEN / THEN LXD's error is raised, after c1 got its own (no) policy back
    with pytest.raises(LXDError, match="Failed to stop instance c1"):
        daemon.evacuate("lxd-2", "stop")
    assert api.writes() == [policy("c1", "stop"), EVACUATE, policy("c1", "")]


def test_policy_that_cannot_be_set_stops_before_evacuating(daemon, api):
    # GIVEN c2's policy cannot be changed (after c1's was)
    evacuating(api, [inst("c1", "lxd-2"), inst("c2", "lxd-2")], [])
    api.on("PATCH", "/1.0/instances/c1", sync({}))
    api.on("PATCH", "/1.0/instances/c2", api_error(500, "disk full"))

    # WHEN / THEN nothing is evacuated and c1 is put back
    with pytest.raises(LXDAPIError, match="disk full"):
        daemon.evacuate("lxd-2", "stop")
    assert api.writes() == [policy("c1", "stop"), policy("c2", "stop"), policy("c1", "")]


def test_policy_that_cannot_be_put_back_is_reported(daemon, api, caplog):
    # GIVEN an evacuation that works but c1's policy cannot be reset afterwards
    evacuating(api, [inst("c1", "lxd-2")], [inst("c1", "lxd-2", "Stopped")])
    api.on("PATCH", "/1.0/instances/c1", sync({}), api_error(500, "database is locked"))

    # WHEN / THEN the operator learns which instance keeps the temporary policy
    with pytest.raises(LXDError) as exc_info:
        daemon.evacuate("lxd-2", "stop")
    assert str(exc_info.value) == (
        "lxd-2 was evacuated, but cluster.evacuate could not be put back on default/c1 "
        "(PATCH /1.0/instances/c1: database is locked)"
    )
    assert "cannot reset cluster.evacuate of default/c1" in caplog.text


def test_failed_reset_after_a_failed_evacuation_keeps_lxds_error(daemon, api, caplog):
    evacuating(api, [inst("c1", "lxd-2")], [])
    api.on("PATCH", "/1.0/instances/c1", sync({}), api_error(500, "database is locked"))
    api.on("GET", "/1.0/operations/ev/wait", op_failed("Failed to stop instance c1"))

    with pytest.raises(LXDError, match="Failed to stop instance c1"):
        daemon.evacuate("lxd-2", "stop")
    assert "cannot reset cluster.evacuate of default/c1" in caplog.text


RESTORE = ("POST", "/1.0/cluster/members/lxd-1/state", {"json": {"action": "restore"}})


def test_restore_reports_instances_brought_home_and_started(daemon, cluster):
    # GIVEN evacuated lxd-1: c1 went to lxd-0, web was stopped in place, x stays stopped
    before = [
        inst("c1", "lxd-0"),
        inst("web", "lxd-1", "Stopped", project="prod"),
        inst("x", "lxd-1", "Stopped"),
        inst("y", "lxd-2"),
    ]
    after = [
        inst("c1", "lxd-1"),
        inst("web", "lxd-1", "Running", project="prod"),
        inst("x", "lxd-1", "Stopped"),
        inst("y", "lxd-2"),
        inst("new", "lxd-1"),
    ]
    cluster.on("GET", "/1.0/instances", sync(before), sync(after))
    cluster.on("POST", "/1.0/cluster/members/lxd-1/state", started("re"))
    cluster.on("GET", "/1.0/operations/re/wait", op_done())

    restoration = daemon.restore("lxd-1")

    assert cluster.writes() == [RESTORE]
    assert restoration == lxd.Evacuation(
        "lxd-1", moved={"default/c1": "lxd-1"}, started=("prod/web",)
    )


def test_restore_unknown_member(daemon, cluster):
    with pytest.raises(LXDError, match="^'lxd-9' is not a cluster member$"):
        daemon.restore("lxd-9")


def test_restore_of_a_member_that_is_not_evacuated(daemon, cluster):
    assert daemon.restore("lxd-0") == lxd.Evacuation("lxd-0", moved={}, already=True)
    assert cluster.writes() == []


# ---------------------------------------------------------------------------- day 2: health


def test_cluster_health_of_a_healthy_cluster(daemon, api):
    members_api(api, THREE)

    assert daemon.cluster_health() == []


def test_cluster_health_lists_every_problem(daemon, cluster):
    # GIVEN MEMBERS: lxd-1 evacuated, lxd-2 offline without a message; lxd-0 leads
    assert daemon.cluster_health() == [
        "member lxd-1 is EVACUATED: Unavailable due to maintenance",
        "member lxd-2 is OFFLINE",
    ]


def test_cluster_health_without_a_database_leader(daemon, api):
    members_api(
        api,
        [
            {"server_name": "lxd-0", "status": "Online", "roles": ["database"]},
            {"server_name": "lxd-1", "status": "", "roles": None},
        ],
    )

    assert daemon.cluster_health() == [
        "member lxd-1 is UNKNOWN",
        "no member has the database-leader role",
    ]


def test_cluster_health_of_a_standalone_server(daemon, api):
    api.on("GET", "/1.0", server())

    assert daemon.cluster_health() == []
    assert api.paths() == [("GET", "/1.0")]


def test_cluster_health_when_the_database_is_unavailable(daemon, api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", api_error(500, "RAFT cluster is unavailable"))

    assert daemon.cluster_health() == [
        "the cluster database is unavailable: GET /1.0/cluster/members: "
        "RAFT cluster is unavailable"
    ]


def test_cluster_health_when_the_daemon_does_not_answer(daemon, api):
    api.on("GET", "/1.0", requests.ConnectionError("socket closed"))

    with pytest.raises(LXDUnavailableError):
        daemon.cluster_health()


# ---------------------------------------------------------------------------- day 2: trust


FP = "f253ed2b2620766eb5a34f96cf62ab1f69989338cf5c380304a831c1a3781f40"


@pytest.mark.parametrize(
    "spelling",
    [
        FP,
        FP.upper(),
        ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper(),
        " ".join(FP[i : i + 2] for i in range(0, 64, 2)),
        f"sha256:{FP}",
        "SHA256 Fingerprint=" + ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper(),
        "sha256 Fingerprint=" + ":".join(FP[i : i + 2] for i in range(0, 64, 2)),
        f"  {FP}\n",
    ],
    ids=["lxd", "upper", "openssl-colons", "spaces", "sha256-label", "openssl", "openssl3", "ws"],
)
def test_normalize_fingerprint_spellings(spelling):
    assert lxd.normalize_fingerprint(spelling) == FP


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("F253ED2B2620", "f253ed2b2620"), ("f2:53:ed:2b:26:20:76", "f253ed2b262076")],
)
def test_normalize_fingerprint_keeps_a_prefix_of_12_or_more(spelling, expected):
    assert lxd.normalize_fingerprint(spelling) == expected


@pytest.mark.parametrize(
    ("spelling", "message"),
    [
        ("", "is not a hexadecimal SHA-256 fingerprint"),
        ("sha256:", "is not a hexadecimal SHA-256 fingerprint"),
        (FP[:-1] + "g", "is not a hexadecimal SHA-256 fingerprint"),
        ("f253-ed2b-2620", "is not a hexadecimal SHA-256 fingerprint"),
        ("md5:" + FP, "is not a hexadecimal SHA-256 fingerprint"),
        (FP[:11], "has 64 hex digits \\(or give at least the first 12\\), not 11$"),
        (FP + "00", "not 66$"),
    ],
)
def test_normalize_fingerprint_refuses(spelling, message):
    with pytest.raises(ValueError, match=message):
        lxd.normalize_fingerprint(spelling)


def trusted(name: str, type_: str, fingerprint: str, projects=()) -> dict[str, Any]:
    """One entry of ``GET /1.0/certificates?recursion=1``."""
    return {
        "name": name,
        "type": type_,
        "fingerprint": fingerprint,
        "restricted": bool(projects),
        "projects": list(projects),
        "certificate": "-----BEGIN CERTIFICATE-----...",
    }


def test_trusted_certificates(daemon, api):
    api.on(
        "GET",
        "/1.0/certificates",
        sync(
            [
                trusted("lxd-0", "server", "c8" * 32),
                trusted("ops", "client", "aa" * 32, ["p2", "p1"]),
                {"name": "grafana", "type": "metrics", "fingerprint": "bb" * 32},
            ]
        ),
    )

    assert daemon.trusted_certificates() == [
        lxd.TrustedCertificate("ops", "client", "aa" * 32, True, ("p1", "p2")),
        lxd.TrustedCertificate("grafana", "metrics", "bb" * 32, False, ()),
        lxd.TrustedCertificate("lxd-0", "server", "c8" * 32, False, ()),
    ]
    assert api.calls == [("GET", "/1.0/certificates", {"params": {"recursion": "1"}})]


def test_trusted_certificates_of_an_empty_store(daemon, api):
    api.on("GET", "/1.0/certificates", sync(None))

    assert daemon.trusted_certificates() == []


def _der_b64(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def test_trust_certificate_adds_a_restricted_client(daemon, api, other_pem):
    api.on("GET", "/1.0/certificates", sync([trusted("lxd-0", "server", "c8" * 32)]))
    api.on("POST", "/1.0/certificates", sync({}))

    fingerprint = daemon.trust_certificate("ops", other_pem, projects=["p2", "p1", "p2"])

    assert fingerprint == sha256_of(other_pem)
    assert api.writes() == [
        (
            "POST",
            "/1.0/certificates",
            {
                "json": {
                    "name": "ops",
                    "type": "client",
                    "restricted": True,
                    "projects": ["p1", "p2"],
                    "certificate": _der_b64(other_pem),
                }
            },
        )
    ]


def test_trust_certificate_adds_an_unrestricted_metrics_scraper(daemon, api, other_pem):
    api.on("GET", "/1.0/certificates", sync([]))
    api.on("POST", "/1.0/certificates", sync({}))

    daemon.trust_certificate("prometheus", other_pem, "metrics")

    [(_, _, kwargs)] = api.writes()
    assert kwargs["json"]["type"] == "metrics"
    assert kwargs["json"]["restricted"] is False
    assert kwargs["json"]["projects"] == []


def test_trust_certificate_already_trusted_as_asked(daemon, api, other_pem):
    api.on(
        "GET", "/1.0/certificates", sync([trusted("ops", "client", sha256_of(other_pem), ["p1"])])
    )

    assert daemon.trust_certificate("ops", other_pem, "client", ("p1",)) == sha256_of(other_pem)
    assert api.writes() == []


def test_trust_certificate_updates_name_and_projects(daemon, api, other_pem):
    fingerprint = sha256_of(other_pem)
    api.on("GET", "/1.0/certificates", sync([trusted("old", "client", fingerprint, ["p1"])]))
    api.on("PUT", f"/1.0/certificates/{fingerprint}", sync({}))

    daemon.trust_certificate("ops", other_pem)

    assert api.writes() == [
        (
            "PUT",
            f"/1.0/certificates/{fingerprint}",
            {"json": {"name": "ops", "type": "client", "restricted": False, "projects": []}},
        )
    ]


def test_trust_certificate_changes_the_type_by_adding_it_again(daemon, api, other_pem):
    # GIVEN a client certificate that should become a metrics one (LXD cannot change types)
    fingerprint = sha256_of(other_pem)
    api.on("GET", "/1.0/certificates", sync([trusted("ops", "client", fingerprint)]))
    api.on("DELETE", f"/1.0/certificates/{fingerprint}", sync({}))
    api.on("POST", "/1.0/certificates", sync({}))

    daemon.trust_certificate("ops", other_pem, "metrics")

    assert api.paths()[-2:] == [
        ("DELETE", f"/1.0/certificates/{fingerprint}"),
        ("POST", "/1.0/certificates"),
    ]


def test_trust_certificate_never_touches_a_members_certificate(daemon, api, other_pem):
    api.on("GET", "/1.0/certificates", sync([trusted("lxd-1", "server", sha256_of(other_pem))]))

    with pytest.raises(lxd.CertificateRefusedError, match="certificate of cluster member lxd-1"):
        daemon.trust_certificate("ops", other_pem)
    assert api.writes() == []


@pytest.mark.parametrize(
    "pem",
    ["", "not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
)
def test_trust_certificate_invalid_pem_never_reaches_lxd(daemon, api, pem):
    with pytest.raises(InvalidCertificateError, match="not a PEM certificate"):
        daemon.trust_certificate("ops", pem)
    assert api.calls == []


def test_trust_certificate_refuses_server_type(daemon, api, other_pem):
    with pytest.raises(lxd.CertificateRefusedError, match="only client or metrics"):
        daemon.trust_certificate("ops", other_pem, "server")
    assert api.calls == []


def test_trust_certificate_for_an_unknown_project(daemon, api, other_pem):
    api.on("GET", "/1.0/certificates", sync([]))
    api.on("POST", "/1.0/certificates", api_error(404, "Project not found"))

    with pytest.raises(LXDError, match="^POST /1.0/certificates: Project not found$"):
        daemon.trust_certificate("ops", other_pem, projects=["nope"])


STORE = [
    trusted("lxd-0", "server", "c8" * 32),
    trusted("ops", "client", FP, ["p1"]),
    trusted("grafana", "metrics", "f253ed2b2620" + "0" * 52),
]


@pytest.mark.parametrize(
    "spelling", [FP, FP.upper(), ":".join(FP[i : i + 2] for i in range(0, 64, 2)), FP[:14]]
)
def test_untrust_certificate(daemon, api, spelling):
    api.on("GET", "/1.0/certificates", sync(STORE))
    api.on("DELETE", f"/1.0/certificates/{FP}", sync({}))

    assert daemon.untrust_certificate(spelling) is True
    assert api.writes() == [("DELETE", f"/1.0/certificates/{FP}", {})]


def test_untrust_certificate_not_trusted(daemon, api):
    api.on("GET", "/1.0/certificates", sync(STORE))

    assert daemon.untrust_certificate("ab" * 32) is False
    assert api.writes() == []


def test_untrust_certificate_refuses_an_ambiguous_prefix(daemon, api):
    api.on("GET", "/1.0/certificates", sync(STORE))

    with pytest.raises(lxd.CertificateRefusedError) as exc_info:
        daemon.untrust_certificate(FP[:12])
    assert str(exc_info.value) == (
        "f253ed2b2620 matches 2 trusted certificates (ops (f253ed2b2620766e), grafana "
        "(f253ed2b26200000)); give more digits"
    )
    assert api.writes() == []


def test_untrust_certificate_refuses_a_members_certificate(daemon, api):
    api.on("GET", "/1.0/certificates", sync(STORE))

    with pytest.raises(lxd.CertificateRefusedError, match="member lxd-0; remove the member"):
        daemon.untrust_certificate("c8" * 32)
    assert api.writes() == []


def test_untrust_certificate_refuses_what_is_not_a_fingerprint(daemon, api):
    with pytest.raises(ValueError, match="not a hexadecimal"):
        daemon.untrust_certificate("ops")
    assert api.calls == []


def test_cluster_certificate(daemon, api, cluster_pem):
    reply = server(clustered=True)
    reply._body["metadata"]["environment"]["certificate"] = cluster_pem
    api.on("GET", "/1.0", reply)

    assert daemon.cluster_certificate() == cluster_pem


def _certificate_token_op(expires: str | None = None) -> FakeResponse:
    metadata: dict[str, Any] = {
        "addresses": ["10.0.0.1:8443"],
        "fingerprint": "c8" * 32,
        "request": {"name": "ops", "type": "client", "token": True, "projects": ["p1"]},
        "secret": "5ecret",
    }
    if expires is not None:
        metadata["expiresAt"] = expires
    return started("ct", {"id": "ct", "class": "token", "status_code": 103, "metadata": metadata})


@pytest.mark.parametrize(
    ("expires", "expires_at"),
    [(None, "0001-01-01T00:00:00Z"), ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z")],
)
def test_issue_client_token(daemon, api, expires, expires_at):
    api.on("GET", "/1.0", server(clustered=True, config={"core.https_address": "10.0.0.1:8443"}))
    api.on("POST", "/1.0/certificates", _certificate_token_op(expires))

    token = daemon.issue_client_token("ops", ["p1"])

    # The token operation is not waited for: it runs until a client redeems the token.
    assert api.writes() == [
        (
            "POST",
            "/1.0/certificates",
            {
                "json": {
                    "name": "ops",
                    "type": "client",
                    "token": True,
                    "restricted": True,
                    "projects": ["p1"],
                }
            },
        )
    ]
    assert ("GET", "/1.0/operations/ct/wait") not in api.paths()
    # LXD's own wire format (what `lxc config trust add` prints): base64 of compact JSON.
    assert (
        base64.b64decode(token)
        == json.dumps(
            {
                "client_name": "ops",
                "fingerprint": "c8" * 32,
                "addresses": ["10.0.0.1:8443"],
                "secret": "5ecret",
                "expires_at": expires_at,
            },
            separators=(",", ":"),
        ).encode()
    )


def test_issue_client_token_unrestricted(daemon, api):
    api.on("GET", "/1.0", server(config={"core.https_address": "[::]:8443"}))
    api.on("POST", "/1.0/certificates", _certificate_token_op())

    daemon.issue_client_token("ops")

    [(_, _, kwargs)] = api.writes()
    assert kwargs["json"]["restricted"] is False
    assert kwargs["json"]["projects"] == []


def test_issue_client_token_without_https(daemon, api):
    api.on("GET", "/1.0", server(config={"core.https_address": ""}))

    with pytest.raises(lxd.HTTPSNotListeningError, match="^core.https_address is not set"):
        daemon.issue_client_token("ops")
    assert api.writes() == []


def test_issue_client_token_lxd_refuses(daemon, api):
    api.on("GET", "/1.0", server(config={"core.https_address": "10.0.0.1:8443"}))
    api.on("POST", "/1.0/certificates", api_error(404, "Project not found"))

    with pytest.raises(LXDNotFoundError, match="^cannot issue a client token: Project not found$"):
        daemon.issue_client_token("ops", ["nope"])


def test_issue_client_token_lxd_not_answering(daemon, api):
    api.on("GET", "/1.0", server(config={"core.https_address": "10.0.0.1:8443"}))
    api.on("POST", "/1.0/certificates", requests.ConnectionError("socket closed"))

    with pytest.raises(LXDUnavailableError, match="socket closed"):
        daemon.issue_client_token("ops")


CERTIFICATES = [
    {"type": "server", "name": "lxd-1", "fingerprint": "f1"},
    {"type": "client", "name": "lxd-1", "fingerprint": "f2"},
    {"type": "server", "name": "lxd-0", "fingerprint": "f0"},
]


def test_remove_member_refuses_a_member_with_instances(daemon, cluster):
    api = cluster
    api.on("GET", "/1.0/instances", sync(INSTANCES))

    with pytest.raises(MemberNotEmptyError) as exc_info:
        daemon.remove_member("lxd-1")
    assert str(exc_info.value) == (
        "member lxd-1 still holds 2 instance(s) (default/c1, prod/web); evacuate it first"
    )
    assert api.writes() == []


def test_remove_member_without_instances_or_certificate(daemon, cluster):
    api = cluster
    # GIVEN an empty member that has no server certificate in the trust store
    api.on("GET", "/1.0/instances", sync(INSTANCES))
    api.on("DELETE", "/1.0/cluster/members/lxd-2", sync({}))
    api.on("GET", "/1.0/certificates", sync(CERTIFICATES))

    # WHEN it is removed
    daemon.remove_member("lxd-2")

    # THEN only the member is deleted, without force
    assert api.writes() == [("DELETE", "/1.0/cluster/members/lxd-2", {"params": {}})]


def test_remove_member_forgets_only_its_server_certificate(daemon, cluster):
    api = cluster
    api.on("GET", "/1.0/instances", sync([]))
    api.on("DELETE", "/1.0/cluster/members/lxd-1", sync({}))
    api.on("GET", "/1.0/certificates", sync(CERTIFICATES))
    api.on("DELETE", "/1.0/certificates/f1", sync({}))

    daemon.remove_member("lxd-1")

    assert api.writes() == [
        ("DELETE", "/1.0/cluster/members/lxd-1", {"params": {}}),
        ("DELETE", "/1.0/certificates/f1", {}),
    ]
    assert ("GET", "/1.0/certificates", {"params": {"recursion": "1"}}) in api.calls


def test_remove_member_force_skips_the_instance_check(daemon, api):
    # GIVEN a dead member that still holds instances
    api.on("DELETE", "/1.0/cluster/members/lxd-1", sync({}))
    api.on("GET", "/1.0/certificates", sync(CERTIFICATES))
    api.on("DELETE", "/1.0/certificates/f1", sync({}))

    # WHEN it is force-removed
    daemon.remove_member("lxd-1", force=True)

    # THEN instances were not even listed, and the delete carries force=1
    assert ("GET", "/1.0/instances") not in api.paths()
    assert api.writes() == [
        ("DELETE", "/1.0/cluster/members/lxd-1", {"params": {"force": "1"}}),
        ("DELETE", "/1.0/certificates/f1", {}),
    ]


def test_remove_member_refuses_the_sole_database_member(daemon, cluster):
    # GIVEN lxd-0 is the only member with a database role and two others remain
    with pytest.raises(SoleDatabaseMemberError) as exc_info:
        daemon.remove_member("lxd-0")
    assert str(exc_info.value) == (
        "member lxd-0 holds the only copy of the cluster database (2 other member(s) have "
        "no database role); removing it would leave the cluster unavailable"
    )
    assert cluster.writes() == []


@pytest.mark.parametrize(
    "members",
    [
        [  # another member holds the database too
            {"server_name": "lxd-0", "status": "Online", "roles": ["database-leader"]},
            {"server_name": "lxd-1", "status": "Online", "roles": ["database"]},
        ],
        [{"server_name": "lxd-0", "status": "Online", "roles": ["database-leader"]}],  # last
    ],
    ids=["another-voter", "last-member"],
)
def test_check_database_survives_passes(daemon, api, members):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync(members))
    daemon.check_database_survives("lxd-0")


def test_remove_member_evacuates_first_when_asked(daemon, api):
    # GIVEN an online member that runs an instance
    api.on("GET", "/1.0", server(clustered=True))
    members = [
        {"server_name": "lxd-0", "status": "Online", "roles": ["database-leader"]},
        {"server_name": "lxd-1", "status": "Online", "roles": ["database"]},
        {"server_name": "lxd-2", "status": "Online", "roles": []},
    ]
    api.on("GET", "/1.0/cluster/members", sync(members))
    on_lxd2 = [{"name": "c1", "project": "default", "location": "lxd-2"}]
    api.on("GET", "/1.0/instances", sync(on_lxd2), sync([]))
    api.on("POST", "/1.0/cluster/members/lxd-2/state", started("ev"))
    api.on("GET", "/1.0/operations/ev/wait", op_done())
    api.on("DELETE", "/1.0/cluster/members/lxd-2", sync({}))
    api.on("GET", "/1.0/certificates", sync([]))

    # WHEN it is removed with evacuate
    daemon.remove_member("lxd-2", evacuate=True)

    # THEN it was evacuated, then removed
    assert api.writes() == [
        ("POST", "/1.0/cluster/members/lxd-2/state", {"json": {"action": "evacuate"}}),
        ("DELETE", "/1.0/cluster/members/lxd-2", {"params": {}}),
    ]


def test_remove_member_waits_for_the_evacuation_its_own_unit_runs(daemon, api):
    # GIVEN a member its own unit is evacuating (LXD already lists it evacuated)
    api.on("GET", "/1.0", server(clustered=True))
    members = [
        {"server_name": "lxd-0", "status": "Online", "roles": ["database-leader"]},
        {"server_name": "lxd-2", "status": "Evacuated", "roles": []},
    ]
    api.on("GET", "/1.0/cluster/members", sync(members))
    on_lxd2 = [{"name": "c1", "project": "default", "location": "lxd-2"}]
    moved = [{"name": "c1", "project": "default", "location": "lxd-0"}]
    api.on("GET", "/1.0/instances", sync(on_lxd2), sync(moved))
    evacuation = {"id": "ev", "description": "Evacuating cluster member"}
    other = {"id": "img", "description": "Downloading image"}
    api.on("GET", "/1.0/operations", sync({"running": [other, evacuation]}))
    api.on("GET", "/1.0/operations/ev/wait", op_done())
    api.on("DELETE", "/1.0/cluster/members/lxd-2", sync({}))
    api.on("GET", "/1.0/certificates", sync([]))

    # WHEN the leader removes it
    daemon.remove_member("lxd-2", evacuate=True)

    # THEN it waited for that evacuation (not the other operation), then removed the member
    assert ("GET", "/1.0/operations/ev/wait") in api.paths()
    assert ("GET", "/1.0/operations/img/wait") not in api.paths()
    assert api.writes() == [("DELETE", "/1.0/cluster/members/lxd-2", {"params": {}})]


def test_forget_server_certificate_without_one(daemon, api):
    api.on("GET", "/1.0/certificates", sync(None))

    assert daemon.forget_server_certificate("lxd-1") is False
    assert api.writes() == []


def test_forget_server_certificate(daemon, api):
    api.on("GET", "/1.0/certificates", sync(CERTIFICATES))
    api.on("DELETE", "/1.0/certificates/f0", sync({}))

    assert daemon.forget_server_certificate("lxd-0") is True
    assert api.writes() == [("DELETE", "/1.0/certificates/f0", {})]


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.1:", ":8443", "host:https"])
def test_split_address_refuses_what_is_not_host_and_port(address):
    with pytest.raises(LXDError, match="is not HOST:PORT"):
        lxd.split_address(address)


@pytest.mark.parametrize(
    "reason",
    [
        "Failed to begin transaction: context deadline exceeded",
        "failed to create dqlite connection: no available dqlite leader server found",
        "RAFT cluster is unavailable",
        "Failed to begin transaction: call exec-sql (budget 9.9s): receive: header: EOF",
    ],
)
def test_database_without_a_leader_is_unavailable_not_an_error(daemon, api, reason):
    # GIVEN a member whose cluster database is electing a leader
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", api_error(500, reason))

    # WHEN / THEN the charm is told to wait, not that something is wrong
    with pytest.raises(LXDUnavailableError) as exc_info:
        daemon.members()
    assert str(exc_info.value) == f"GET /1.0/cluster/members: {reason}"


def test_member_answers_when_its_api_accepts_connections(daemon):
    # GIVEN a listening socket standing in for a member's API, and a closed port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        alive = Member("lxd-1", f"https://127.0.0.1:{port}", "Evacuated")
        assert daemon.member_answers(alive) is True
    dead = Member("lxd-2", f"https://127.0.0.1:{port}", "Evacuated")
    assert daemon.member_answers(dead, timeout=1) is False
    assert daemon.member_answers(Member("lxd-3", "", "Offline")) is False


# ---------------------------------------------------------------------------- networks, pools


@dataclass(frozen=True)
class Spec:
    """A requested object (``charm_common.lxd_member.LXDObject`` has the same fields)."""

    name: str
    kind: str
    config: dict[str, str] = field(default_factory=dict)
    member_config: dict[str, str] = field(default_factory=dict)
    description: str = ""


UPLINK = Spec("UPLINK", "physical", {"mtu": "1500"}, {"parent": "br-uplink"}, "uplink")
OVN = Spec("default", "ovn", {"network": "UPLINK"}, {}, "default network")
POOL = Spec("remote", "ceph", {"ceph.osd.pool_name": "lxd"}, {"source": "lxd"})
NET = "/1.0/networks/UPLINK"
TWO_MEMBERS = [{"server_name": "lxd-0"}, {"server_name": "lxd-1"}]


def network(
    status: str = "Created",
    locations: tuple[str, ...] = ("lxd-0", "lxd-1"),
    config: dict[str, str] | None = None,
    kind: str = "physical",
    description: str = "uplink",
) -> FakeResponse:
    """``GET /1.0/networks/<name>`` of a managed network."""
    return sync(
        {
            "name": "UPLINK",
            "type": kind,
            "managed": True,
            "status": status,
            "locations": list(locations),
            "config": {"mtu": "1500", "volatile.last_state.created": "false"}
            if config is None
            else config,
            "description": description,
        }
    )


@pytest.fixture
def two_members(api):
    api.on("GET", "/1.0", server(clustered=True))
    api.on("GET", "/1.0/cluster/members", sync(TWO_MEMBERS))
    return api


def test_needs_member_stage():
    assert needs_member_stage("network", UPLINK)
    assert needs_member_stage("network", Spec("br0", "bridge"))  # LXD: even without keys
    assert needs_member_stage("storage-pool", Spec("local", "dir"))
    assert not needs_member_stage("network", OVN)
    assert needs_member_stage("network", Spec("o", "ovn", member_config={"x": "1"}))


def test_member_values_from_objects():
    assert member_values_from_objects([("network", UPLINK), ("storage-pool", POOL)]) == {
        ("network", "UPLINK", "parent"): "br-uplink",
        ("storage-pool", "remote", "source"): "lxd",
    }


def test_unknown_entity_is_a_bug(daemon):
    with pytest.raises(ValueError, match="unknown LXD entity 'volume'"):
        daemon.object_state("volume", "x")


def test_unfinished_objects(daemon, api):
    api.on(
        "GET",
        "/1.0/networks",
        sync(
            [
                {"name": "eth0", "managed": False, "status": ""},
                {"name": "UPLINK", "managed": True, "status": "Errored"},
                {"name": "default", "managed": True, "status": "Created"},
            ]
        ),
    )
    api.on(
        "GET",
        "/1.0/storage-pools",
        sync([{"name": "remote", "status": "Pending"}, {"name": "local", "status": "Created"}]),
    )

    assert daemon.unfinished_objects() == {
        "network UPLINK": "Errored",
        "storage-pool remote": "Pending",
    }
    assert api.calls == [
        ("GET", "/1.0/networks", {"params": {"recursion": "1"}}),
        ("GET", "/1.0/storage-pools", {"params": {"recursion": "1"}}),
    ]


def test_ovn_networks(daemon, api):
    api.on(
        "GET",
        "/1.0/networks",
        sync(
            [
                {"name": "eth0", "managed": False, "type": "physical"},
                {"name": "UPLINK", "managed": True, "type": "physical"},
                {"name": "default", "managed": True, "type": "ovn"},
                {"name": "tenant", "managed": True, "type": "ovn"},
            ]
        ),
    )

    assert daemon.ovn_networks() == ["default", "tenant"]


def test_object_state_of_a_pool_on_one_member(daemon, api):
    api.on(
        "GET",
        "/1.0/storage-pools/remote",
        sync(
            {
                "driver": "ceph",
                "status": "Unknown",
                "locations": ["lxd-0"],
                "config": {"size": 10},
            }
        ),
    )

    state = daemon.object_state("storage-pool", "remote", "lxd-1")

    assert state == ObjectState("ceph", "Unknown", ("lxd-0",), {"size": "10"}, "")
    assert api.calls == [("GET", "/1.0/storage-pools/remote", {"params": {"target": "lxd-1"}})]


@pytest.mark.parametrize(
    "reply",
    [
        api_error(404, "Network not found"),
        sync({"name": "eth0", "type": "physical", "managed": False, "status": ""}),
    ],
)
def test_object_state_of_a_missing_or_unmanaged_network(daemon, api, reply):
    api.on("GET", "/1.0/networks/eth0", reply)

    assert daemon.object_state("network", "eth0") is None


def test_not_found_is_typed(daemon, api):
    api.on("GET", NET, api_error(404, "Network not found"))

    with pytest.raises(LXDNotFoundError, match="^GET /1.0/networks/UPLINK: Network not found$"):
        daemon._call("get", "networks/UPLINK")


def test_member_object_is_defined_with_member_keys_only(daemon, api):
    # GIVEN no member has UPLINK yet
    api.on("GET", NET, api_error(404, "Network not found"))
    api.on("POST", "/1.0/networks", sync({}))

    # WHEN lxd-1 defines it on itself
    assert daemon.ensure_member_object("network", UPLINK, "lxd-1") is True

    # THEN it sent the member key alone (LXD refuses cluster-wide keys with a target)
    assert api.writes() == [
        (
            "POST",
            "/1.0/networks",
            {
                "json": {"name": "UPLINK", "type": "physical", "config": {"parent": "br-uplink"}},
                "params": {"target": "lxd-1"},
            },
        )
    ]


def test_member_object_defined_elsewhere_is_defined_here_too(daemon, api):
    api.on("GET", NET, network("Unknown", locations=("lxd-0",), config={}))
    api.on("POST", "/1.0/networks", sync({}))

    assert daemon.ensure_member_object("network", UPLINK, "lxd-1") is True
    assert [(m, p) for m, p, _ in api.writes()] == [("POST", "/1.0/networks")]


def test_member_object_created_on_the_member_is_left_alone(daemon, api):
    api.on("GET", NET, network(config={"parent": "eth9"}))

    assert daemon.ensure_member_object("network", UPLINK, "lxd-1") is False
    assert api.writes() == []


def test_pending_member_definition_gets_the_member_keys_that_differ(daemon, api):
    api.on("GET", NET, network("Pending", config={"parent": "eth9", "extra": "kept"}))
    api.on("PATCH", NET, sync({}))

    assert daemon.ensure_member_object("network", UPLINK, "lxd-1") is True
    assert api.writes() == [
        (
            "PATCH",
            NET,
            {"json": {"config": {"parent": "br-uplink"}}, "params": {"target": "lxd-1"}},
        )
    ]


def test_pending_member_definition_that_matches_is_left_alone(daemon, api):
    api.on("GET", NET, network("Pending", config={"parent": "br-uplink"}))

    assert daemon.ensure_member_object("network", UPLINK, "lxd-1") is False
    assert api.writes() == []


def test_member_definition_lxd_refuses(daemon, api):
    api.on("GET", NET, api_error(404, "Network not found"))
    api.on("POST", "/1.0/networks", api_error(400, 'Config key "mtu" may not be used'))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_member_object("network", UPLINK, "lxd-1")
    assert str(refused.value) == 'network UPLINK (member lxd-1): Config key "mtu" may not be used'


def test_name_taken_by_another_type_is_refused(daemon, api):
    api.on("GET", NET, network(kind="bridge"))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_member_object("network", UPLINK, "lxd-1")
    assert str(refused.value) == (
        "network UPLINK exists with type bridge, not physical: rename one of them"
    )
    assert api.writes() == []


def test_changeable_object_of_another_type_is_refused(daemon, api):
    api.on("GET", NET, network(kind="bridge"))

    with pytest.raises(
        ObjectRefusedError, match="^network UPLINK exists with type bridge, not physical"
    ):
        daemon.check_changeable("network", UPLINK, "lxd-1")
    assert api.writes() == []


def pool(status: str = "Created", config: dict[str, str] | None = None) -> FakeResponse:
    """``GET /1.0/storage-pools/remote`` of a ceph pool."""
    return sync({"name": "remote", "driver": "ceph", "status": status, "config": config or {}})


def test_changeable_pool_with_another_source_on_this_member_is_refused(daemon, api):
    # GIVEN the pool, created on lxd-1 from another source than the one asked for
    api.on("GET", "/1.0/storage-pools/remote", pool(), pool(config={"source": "other"}))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.check_changeable("storage-pool", POOL, "lxd-1")

    assert str(refused.value) == (
        "storage-pool remote has source 'other' on lxd-1, not 'lxd': LXD cannot change it "
        "in place; set it back or use another name"
    )
    assert api.calls[-1] == ("GET", "/1.0/storage-pools/remote", {"params": {"target": "lxd-1"}})
    assert api.writes() == []


@pytest.mark.parametrize(
    "on_member",
    [
        pool(config={"source": "lxd", "ceph.osd.pool_name": "old"}),  # only mutable keys differ
        pool("Pending", config={"source": "other"}),  # not made of it yet
        pool(config={}),  # LXD shows no source (a ceph pool on a later member)
        api_error(404, "Storage pool not found"),
    ],
)
def test_changeable_pool(daemon, api, on_member):
    api.on("GET", "/1.0/storage-pools/remote", pool(), on_member)

    daemon.check_changeable("storage-pool", POOL, "lxd-1")

    assert api.writes() == []


def test_changeable_network_without_immutable_keys_is_read_once(daemon, api):
    api.on("GET", NET, network(config={"parent": "eth9"}))

    daemon.check_changeable("network", UPLINK, "lxd-1")

    assert api.paths() == [("GET", NET)]


LAB = Profile("lab", {"limits.cpu": "1"}, {"eth0": {"type": "nic", "network": "br0"}}, "small")
PROFILE = "/1.0/profiles/lab"


def test_missing_profile_is_created(daemon, api):
    api.on("GET", PROFILE, api_error(404, "Profile not found"))
    api.on("POST", "/1.0/profiles", sync({}))

    assert daemon.ensure_profile(LAB) is True
    assert api.writes() == [
        (
            "POST",
            "/1.0/profiles",
            {
                "json": {
                    "name": "lab",
                    "config": {"limits.cpu": "1"},
                    "devices": {"eth0": {"type": "nic", "network": "br0"}},
                    "description": "small",
                }
            },
        )
    ]


def test_profile_gets_what_differs_and_keeps_the_rest(daemon, api):
    # GIVEN the profile with another limit, an older eth0, its own key and device
    current = {
        "name": "lab",
        "description": "small",
        "config": {"limits.cpu": "2", "limits.memory": "1GiB"},
        "devices": {"eth0": {"type": "nic", "network": "lxdbr0"}, "root": {"type": "disk"}},
    }
    api.on("GET", PROFILE, sync(current))
    api.on("PATCH", PROFILE, sync({}))

    assert daemon.ensure_profile(LAB) is True

    # THEN only what differs is sent (LXD's PATCH keeps the keys and devices not named)
    assert api.writes() == [
        (
            "PATCH",
            PROFILE,
            {
                "json": {
                    "config": {"limits.cpu": "1"},
                    "devices": {"eth0": {"type": "nic", "network": "br0"}},
                }
            },
        )
    ]


def test_profile_as_wanted_is_left_alone(daemon, api):
    current = {
        "name": "lab",
        "description": "small",
        "config": dict(LAB.config),
        "devices": {**LAB.devices, "root": {"type": "disk"}},
    }
    api.on("GET", PROFILE, sync(current))

    assert daemon.ensure_profile(LAB) is False
    assert api.writes() == []


def test_profile_lxd_refuses(daemon, api):
    api.on("GET", PROFILE, api_error(404, "Profile not found"))
    api.on("POST", "/1.0/profiles", api_error(400, 'Device validation failed for "eth0"'))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_profile(LAB)
    assert str(refused.value) == 'profile lab: Device validation failed for "eth0"'


@pytest.mark.parametrize(
    ("reply", "missing"),
    [
        (api_error(404, "Network not found"), ("lxd-0", "lxd-1")),
        (network("Pending", locations=("lxd-0",), config={}), ("lxd-1",)),
    ],
)
def test_cluster_object_waits_for_every_member(daemon, two_members, reply, missing):
    two_members.on("GET", NET, reply)

    with pytest.raises(ObjectPendingError) as pending:
        daemon.ensure_cluster_object("network", UPLINK)
    assert pending.value.missing == missing
    assert str(pending.value) == f"network UPLINK is not defined on {', '.join(missing)} yet"
    assert two_members.writes() == []


def test_cluster_object_is_created_once_every_member_has_it(daemon, two_members):
    # GIVEN both members defined UPLINK; LXD drops the description of the cluster-wide POST
    two_members.on(
        "GET",
        NET,
        network("Pending", config={}, description=""),
        network(description=""),
    )
    two_members.on("POST", "/1.0/networks", sync({}))
    two_members.on("PATCH", NET, sync({}))

    assert daemon.ensure_cluster_object("network", UPLINK) is True

    # THEN it is created with the cluster-wide keys only, then its description set
    assert two_members.writes() == [
        (
            "POST",
            "/1.0/networks",
            {
                "json": {
                    "name": "UPLINK",
                    "type": "physical",
                    "config": {"mtu": "1500"},
                    "description": "uplink",
                },
                "params": {},
            },
        ),
        ("PATCH", NET, {"json": {"config": {}, "description": "uplink"}, "params": {}}),
    ]


def test_ovn_network_is_created_cluster_wide_at_once(daemon, api):
    api.on("GET", "/1.0/networks/default", api_error(404, "not found"), network(kind="ovn"))
    api.on("POST", "/1.0/networks", sync({}))
    api.on("PATCH", "/1.0/networks/default", sync({}))

    assert daemon.ensure_cluster_object("network", OVN) is True

    # no member listing, no per-member stage
    assert ("GET", "/1.0/cluster/members") not in api.paths()
    assert api.writes()[0][2]["json"]["config"] == {"network": "UPLINK"}


def test_cluster_wide_creation_lxd_refuses(daemon, two_members):
    two_members.on("GET", NET, network("Pending", config={}))
    two_members.on(
        "POST",
        "/1.0/networks",
        api_error(500, 'failed to notify peer 10.0.0.2:8443: Parent interface "x" not found'),
    )

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_cluster_object("network", UPLINK)
    assert str(refused.value) == (
        'network UPLINK: failed to notify peer 10.0.0.2:8443: Parent interface "x" not found'
    )


def test_created_object_gets_only_the_cluster_wide_keys_that_differ(daemon, api):
    api.on("GET", NET, network(config={"mtu": "9000", "dns.nameservers": "192.0.2.53"}))
    api.on("PATCH", NET, sync({}))
    wanted = Spec("UPLINK", "physical", {"mtu": "1500", "dns.nameservers": "192.0.2.53"})

    assert daemon.ensure_cluster_object("network", wanted) is True

    # (the current description goes along: a PATCH without one clears it)
    assert api.writes() == [
        (
            "PATCH",
            NET,
            {"json": {"config": {"mtu": "1500"}, "description": "uplink"}, "params": {}},
        )
    ]


def test_created_object_that_matches_is_left_alone(daemon, api):
    api.on("GET", NET, network())

    assert daemon.ensure_cluster_object("network", UPLINK) is False
    assert api.writes() == []


def test_errored_object_is_retried_without_config(daemon, api):
    api.on("GET", NET, network("Errored"), network())
    api.on("POST", "/1.0/networks", sync({}))

    assert daemon.ensure_cluster_object("network", UPLINK) is True

    assert api.writes() == [
        (
            "POST",
            "/1.0/networks",
            {
                "json": {
                    "name": "UPLINK",
                    "type": "physical",
                    "config": {},
                    "description": "uplink",
                },
                "params": {},
            },
        )
    ]


def test_errored_ovn_network_is_deleted_and_created_again(daemon, api):
    # LXD 5.0.2 refuses to retry an errored OVN network ("Network is not in pending state")
    errored = network("Errored", ("lxd-0", "lxd-1"), {"network": "UPLINK"}, "ovn")
    created = network(
        "Created", ("lxd-0", "lxd-1"), {"network": "UPLINK"}, "ovn", "default network"
    )
    api.on("GET", "/1.0/networks/default", errored, created)
    api.on("DELETE", "/1.0/networks/default", sync({}))
    api.on("POST", "/1.0/networks", sync({}))

    assert daemon.ensure_cluster_object("network", OVN) is True

    assert api.writes() == [
        ("DELETE", "/1.0/networks/default", {}),
        (
            "POST",
            "/1.0/networks",
            {
                "json": {
                    "name": "default",
                    "type": "ovn",
                    "config": {"network": "UPLINK"},
                    "description": "default network",
                },
                "params": {},
            },
        ),
    ]


def test_an_errored_ovn_network_in_use_is_left_as_it_is(daemon, api):
    errored = network("Errored", ("lxd-0", "lxd-1"), {"network": "UPLINK"}, "ovn")
    api.on("GET", "/1.0/networks/default", errored)
    api.on("DELETE", "/1.0/networks/default", api_error(400, "The network is currently in use"))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_cluster_object("network", OVN)

    assert str(refused.value) == "network default: The network is currently in use"
    assert api.writes() == [("DELETE", "/1.0/networks/default", {})]


def test_errored_object_with_other_values_cannot_be_fixed_by_the_charm(daemon, api):
    api.on("GET", NET, network("Errored", config={"mtu": "9000"}))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_cluster_object("network", UPLINK)
    assert str(refused.value) == (
        "network UPLINK: its creation failed with other values of mtu, which LXD cannot "
        "change now; delete it (lxc network delete UPLINK) so it is created again"
    )
    assert api.writes() == []


def test_standalone_object_is_created_with_every_key(daemon, api):
    api.on("GET", "/1.0/storage-pools/remote", api_error(404, "Storage pool not found"))
    api.on("POST", "/1.0/storage-pools", sync({}))

    assert daemon.ensure_standalone_object("storage-pool", POOL) is True

    assert api.writes() == [
        (
            "POST",
            "/1.0/storage-pools",
            {
                "json": {
                    "name": "remote",
                    "driver": "ceph",
                    "config": {"ceph.osd.pool_name": "lxd", "source": "lxd"},
                    "description": "",
                },
                "params": {},
            },
        )
    ]


def test_standalone_object_that_exists_gets_the_keys_that_differ(daemon, api):
    api.on(
        "GET",
        "/1.0/storage-pools/remote",
        sync({"driver": "ceph", "status": "Created", "config": {"ceph.osd.pool_name": "old"}}),
    )
    api.on("PATCH", "/1.0/storage-pools/remote", sync({}))

    assert daemon.ensure_standalone_object("storage-pool", POOL) is True
    assert api.writes()[0][2]["json"] == {
        "config": {"ceph.osd.pool_name": "lxd"},
        "description": "",
    }


def test_update_lxd_refuses(daemon, api):
    api.on("GET", NET, network(config={"mtu": "9000"}))
    api.on("PATCH", NET, api_error(400, "Invalid value for mtu"))

    with pytest.raises(ObjectUpdateRefusedError, match="^network UPLINK: Invalid value for mtu$"):
        daemon.ensure_cluster_object("network", UPLINK)


def test_pending_member_definition_lxd_refuses_to_change_is_not_an_update(daemon, api):
    # (a refused change of a definition still pending means the object is not there yet)
    api.on("GET", NET, network("Pending", config={"parent": "eth9"}))
    api.on("PATCH", NET, api_error(400, "nope"))

    with pytest.raises(ObjectRefusedError) as refused:
        daemon.ensure_member_object("network", UPLINK, "lxd-1")
    assert type(refused.value) is ObjectRefusedError
