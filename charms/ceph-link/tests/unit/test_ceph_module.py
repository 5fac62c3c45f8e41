"""Unit tests of ``src/ceph.py``: no Ceph cluster, files in a temporary directory.

``subprocess.run`` is replaced by :class:`FakeRun` for ``ceph fs ls``. Broker requests are
built by the real charmhelpers ``CephBrokerRq`` (see conftest.py for its platform check).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from charmhelpers.contrib.storage.linux.ceph import CephBrokerRq

import ceph
from ceph import (
    CONF_MARKER,
    BrokerResponse,
    CephError,
    ForeignConfigError,
    InvalidProviderDataError,
    Pool,
)
from conftest import KEY, NEW_KEY


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the broker request ----------------------------------------------------------------


def test_broker_request_ops_and_id():
    raw, request_id = ceph.broker_request([Pool("remote", 3), Pool("fast", 2, 64)])
    request = json.loads(raw)
    assert request["api-version"] == 1
    assert request["request-id"] == request_id
    ops = request["ops"]
    assert [(o["op"], o["name"], o["replicas"], o["pg_num"], o["app-name"]) for o in ops] == [
        ("create-pool", "remote", 3, None, "rbd"),
        ("create-pool", "fast", 2, 64, "rbd"),
    ]
    expected = hashlib.sha1(
        json.dumps(ops, sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()
    assert request_id == expected
    assert len(request_id) == 40


def test_broker_request_is_what_ceph_mon_parses():
    raw, request_id = ceph.broker_request([Pool("remote", 3, 128)])
    parsed = CephBrokerRq(raw_request_data=raw)
    assert parsed.request_id == request_id
    assert parsed.ops[0]["name"] == "remote"
    assert parsed.ops[0]["pg_num"] == 128


def test_broker_request_id_is_stable_and_follows_the_pools():
    one = ceph.broker_request([Pool("remote", 3)])
    assert ceph.broker_request([Pool("remote", 3)]) == one
    ids = {
        one[1],
        ceph.broker_request([Pool("remote", 2)])[1],
        ceph.broker_request([Pool("remote", 3, 32)])[1],
        ceph.broker_request([Pool("other", 3)])[1],
        ceph.broker_request([Pool("remote", 3), Pool("fast", 2)])[1],
        ceph.broker_request([Pool("fast", 2), Pool("remote", 3)])[1],
    }
    assert len(ids) == 6


def test_response_key_names_the_unit():
    assert ceph.response_key("ceph-link/0") == "broker-rsp-ceph-link-0"
    assert ceph.response_key("lxd-ceph/12") == "broker-rsp-lxd-ceph-12"


# -- the broker response ---------------------------------------------------------------


def test_broker_response_decode():
    raw = json.dumps({"exit-code": 1, "request-id": "abc", "stderr": "no space"})
    assert BrokerResponse.decode(raw) == BrokerResponse("abc", 1, "no space")
    assert BrokerResponse.decode('{"exit-code": 0}') == BrokerResponse("", 0, "")
    raw = json.dumps({"exit-code": 0, "request-id": None, "stderr": None})
    assert BrokerResponse.decode(raw) == BrokerResponse("", 0, "")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "broker response is not JSON"),
        ("{oops", "broker response is not JSON"),
        ("[1, 2]", "has no integer 'exit-code'"),
        ('"text"', "has no integer 'exit-code'"),
        ('{"request-id": "abc"}', "has no integer 'exit-code'"),
        ('{"exit-code": "0"}', "has no integer 'exit-code'"),
        ('{"exit-code": null}', "has no integer 'exit-code'"),
        ('{"exit-code": 1.5}', "has no integer 'exit-code'"),
    ],
)
def test_broker_response_decode_errors(raw, message):
    with pytest.raises(InvalidProviderDataError, match=message):
        BrokerResponse.decode(raw)


# -- the provider's data ---------------------------------------------------------------


def test_valid_key():
    assert ceph.valid_key(KEY) == KEY
    assert ceph.valid_key(NEW_KEY) == NEW_KEY
    # a real cephx secret as ceph-authtool prints it
    real = "AQBzBhNjAAAAABAAdc4sf+1p4Ld9TDgzY+kEzQ=="
    assert ceph.valid_key(real) == real


@pytest.mark.parametrize(
    "key",
    [
        "",
        "AQ==",
        "not base64!",
        KEY[:-4],
        KEY + "AAAA",
        KEY.rstrip("="),
        KEY[:20] + " " + KEY[20:],
    ],
)
def test_invalid_key(key):
    with pytest.raises(InvalidProviderDataError, match="not a cephx key"):
        ceph.valid_key(key)


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("10.0.0.1", "10.0.0.1"),
        (" 10.0.0.1\n", "10.0.0.1"),
        ("10.0.0.1:6789", "10.0.0.1:6789"),
        ("10.0.0.1:3300", "10.0.0.1:3300"),
        ("fd00::1", "[fd00::1]"),
        ("FD00:0:0::1", "[fd00::1]"),
        ("[fd00::1]", "[fd00::1]"),
        ("[fd00::1]:6789", "[fd00::1]:6789"),
        ("[2001:DB8::5]:3300", "[2001:db8::5]:3300"),
        ("::1", "[::1]"),
    ],
)
def test_mon_address_normalisation(value, normalised):
    assert ceph.mon_address(value) == normalised


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is not an IP address"),
        ("mon1", "'mon1' is not an IP address"),
        ("mon1.example:6789", "is not an IP address"),
        ("10.0.0.256", "is not an IP address"),
        ("10.0.0.1:6789:1", "is not an IP address"),
        ("[mon1]:6789", "is not an IP address"),
        ("10.0.0.1:0", "'10.0.0.1:0' has an invalid port"),
        ("10.0.0.1:65536", "has an invalid port"),
        ("10.0.0.1:port", "has an invalid port"),
        ("10.0.0.1:-1", "has an invalid port"),
        ("[fd00::1]:x", "has an invalid port"),
        ("[fd00::1]:99999", "has an invalid port"),
    ],
)
def test_mon_address_validation(value, message):
    with pytest.raises(InvalidProviderDataError) as raised:
        ceph.mon_address(value)
    assert str(raised.value).startswith(f"mon address {value!r}")
    assert message in str(raised.value)


def test_mon_addresses_merge_deduplicate_and_sort():
    found = ceph.mon_addresses(
        ["10.0.0.2", "", "fd00::1", "10.0.0.1"],
        json.dumps(["10.0.0.1", " 10.0.0.2 ", "[fd00::1]", "10.0.0.3:6789"]),
    )
    assert found == ["10.0.0.1", "10.0.0.2", "10.0.0.3:6789", "[fd00::1]"]


def test_mon_addresses_without_an_app_list():
    assert ceph.mon_addresses(["10.0.0.1"], "") == ["10.0.0.1"]
    assert ceph.mon_addresses([], "") == []
    assert ceph.mon_addresses([], "[]") == []


@pytest.mark.parametrize("listed", ["nope", "{}", '"10.0.0.1"', "[1]", '["10.0.0.1", null]'])
def test_mon_addresses_rejects_a_bad_list(listed):
    with pytest.raises(InvalidProviderDataError, match="'ceph-mon-public-addresses' is not"):
        ceph.mon_addresses(["10.0.0.1"], listed)


def test_mon_addresses_rejects_a_bad_address_in_the_list():
    with pytest.raises(InvalidProviderDataError, match="'mon9' is not an IP address"):
        ceph.mon_addresses([], json.dumps(["10.0.0.1", "mon9"]))


# -- rendering -------------------------------------------------------------------------


def test_render_conf():
    assert ceph.render_conf(["10.0.0.1", "[fd00::1]:6789"], "cephx") == (
        f"{CONF_MARKER}\n"
        "[global]\n"
        "mon host = 10.0.0.1 [fd00::1]:6789\n"
        "auth cluster required = cephx\n"
        "auth service required = cephx\n"
        "auth client required = cephx\n"
    )


def test_render_conf_rbd_default_features_only_when_given():
    assert "rbd default features" not in ceph.render_conf(["10.0.0.1"], "cephx", "")
    conf = ceph.render_conf(["10.0.0.1"], "none", "61")
    assert conf.endswith("auth client required = none\nrbd default features = 61\n")


def test_render_keyring_and_paths():
    assert ceph.render_keyring("ceph-link", KEY) == f"[client.ceph-link]\n\tkey = {KEY}\n"
    assert ceph.conf_path("/etc/ceph") == "/etc/ceph/ceph.conf"
    assert ceph.keyring_path("/etc/ceph", "lxd") == "/etc/ceph/ceph.client.lxd.keyring"


# -- files -----------------------------------------------------------------------------


def test_write_conf_creates_the_directory_and_only_rewrites_changes(tmp_path):
    directory = tmp_path / "a" / "ceph"
    conf = ceph.render_conf(["10.0.0.1"], "cephx")
    assert ceph.write_conf(str(directory), conf) is True
    path = directory / "ceph.conf"
    assert path.read_text() == conf
    assert path.read_text().splitlines()[0] == CONF_MARKER
    assert mode(path) == 0o644
    inode = path.stat().st_ino
    assert ceph.write_conf(str(directory), conf) is False
    assert path.stat().st_ino == inode
    changed = ceph.render_conf(["10.0.0.1", "10.0.0.2"], "cephx")
    assert ceph.write_conf(str(directory), changed) is True
    assert path.read_text() == changed


def test_write_conf_replaces_an_empty_file(tmp_path):
    (tmp_path / "ceph.conf").write_bytes(b"")
    conf = ceph.render_conf(["10.0.0.1"], "cephx")
    assert ceph.write_conf(str(tmp_path), conf) is True
    assert (tmp_path / "ceph.conf").read_text() == conf


@pytest.mark.parametrize(
    "foreign",
    [b"[global]\nfsid = 1\n", b"# Written by someone else\n", b"\n" + CONF_MARKER.encode()],
)
def test_write_conf_leaves_a_foreign_file_alone(tmp_path, foreign):
    path = tmp_path / "ceph.conf"
    path.write_bytes(foreign)
    before = path.stat()
    with pytest.raises(ForeignConfigError, match="was not written by ceph-link"):
        ceph.write_conf(str(tmp_path), ceph.render_conf(["10.0.0.1"], "cephx"))
    assert path.read_bytes() == foreign
    assert path.stat().st_ino == before.st_ino
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_write_keyring_mode_0600(tmp_path):
    assert ceph.write_keyring(str(tmp_path), "ceph-link", KEY) is True
    path = tmp_path / "ceph.client.ceph-link.keyring"
    assert path.read_text() == f"[client.ceph-link]\n\tkey = {KEY}\n"
    assert mode(path) == 0o600
    assert ceph.write_keyring(str(tmp_path), "ceph-link", KEY) is False
    assert ceph.write_keyring(str(tmp_path), "ceph-link", NEW_KEY) is True
    assert NEW_KEY in path.read_text()
    assert mode(path) == 0o600


def test_write_keyring_tightens_an_existing_0644_file(tmp_path):
    path = tmp_path / "ceph.client.ceph-link.keyring"
    path.write_text(ceph.render_keyring("ceph-link", KEY))  # same content
    path.chmod(0o644)
    assert ceph.write_keyring(str(tmp_path), "ceph-link", KEY) is True
    assert mode(path) == 0o600
    path.write_text("old")
    path.chmod(0o644)
    assert ceph.write_keyring(str(tmp_path), "ceph-link", KEY) is True
    assert mode(path) == 0o600


def test_modes_do_not_depend_on_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        ceph.write_conf(str(tmp_path), ceph.render_conf(["10.0.0.1"], "cephx"))
    finally:
        os.umask(old)
    old = os.umask(0)
    try:
        ceph.write_keyring(str(tmp_path), "ceph-link", KEY)
    finally:
        os.umask(old)
    assert mode(tmp_path / "ceph.conf") == 0o644
    assert mode(tmp_path / "ceph.client.ceph-link.keyring") == 0o600


def test_write_leaves_no_temp_files(tmp_path):
    ceph.write_keyring(str(tmp_path), "ceph-link", KEY)
    ceph.write_keyring(str(tmp_path), "ceph-link", NEW_KEY)
    ceph.write_conf(str(tmp_path), ceph.render_conf(["10.0.0.1"], "cephx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ceph.client.ceph-link.keyring",
        "ceph.conf",
    ]


def test_write_is_atomic_when_the_replace_fails(tmp_path, monkeypatch):
    ceph.write_keyring(str(tmp_path), "ceph-link", KEY)
    path = tmp_path / "ceph.client.ceph-link.keyring"
    seen = []

    def failing_replace(src, dst):
        seen.append((src, mode(src), Path(src).read_text()))
        raise OSError("disk full")

    monkeypatch.setattr(ceph.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        ceph.write_keyring(str(tmp_path), "ceph-link", NEW_KEY)
    # the old keyring is intact, the temporary file is gone
    assert KEY in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["ceph.client.ceph-link.keyring"]
    # the temporary file was in the same directory (same filesystem: rename is atomic),
    # and already 0600 while it held the key
    [(src, tmp_mode, content)] = seen
    assert Path(src).parent == tmp_path
    assert tmp_mode == 0o600
    assert NEW_KEY in content


# -- cephfs ----------------------------------------------------------------------------


class FakeRun:
    """``subprocess.run``: records argv and keyword arguments, answers as told."""

    def __init__(self, stdout: str = "[]", returncode: int = 0, stderr: str = "", exc=None):
        self.stdout, self.returncode, self.stderr, self.exc = stdout, returncode, stderr, exc
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        if self.exc is not None:
            raise self.exc
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, self.stderr)


FS_LS = json.dumps(
    [
        {"name": "fs2", "metadata_pool": "fs2_meta", "data_pools": ["fs2_data"]},
        {"name": "fs1", "metadata_pool": "fs1_meta", "data_pools": ["fs1_data"]},
    ]
)


def test_filesystems_lists_names_with_the_charms_key(monkeypatch):
    run = FakeRun(FS_LS)
    monkeypatch.setattr(ceph.subprocess, "run", run)
    assert ceph.filesystems("/etc/ceph", "ceph-link") == ["fs1", "fs2"]
    [(argv, kwargs)] = run.calls
    assert argv[0] == "/usr/bin/ceph"
    assert argv[argv.index("--conf") + 1] == "/etc/ceph/ceph.conf"
    assert argv[argv.index("--id") + 1] == "ceph-link"
    assert argv[argv.index("--keyring") + 1] == "/etc/ceph/ceph.client.ceph-link.keyring"
    assert argv[-4:] == ["fs", "ls", "--format", "json"]
    assert kwargs["timeout"] > ceph.COMMAND_TIMEOUT
    assert kwargs["capture_output"] is True


def test_filesystems_none(monkeypatch):
    monkeypatch.setattr(ceph.subprocess, "run", FakeRun("[]\n"))
    assert ceph.filesystems("/etc/ceph", "ceph-link") == []


def test_filesystems_failure_carries_stderr(monkeypatch):
    run = FakeRun("", 1, "  error connecting to the cluster: (13) Permission denied\n")
    monkeypatch.setattr(ceph.subprocess, "run", run)
    with pytest.raises(
        CephError, match=r"^ceph fs ls failed: error connecting to the cluster: \(13\)"
    ):
        ceph.filesystems("/etc/ceph", "ceph-link")


def test_filesystems_failure_message_is_bounded(monkeypatch):
    monkeypatch.setattr(ceph.subprocess, "run", FakeRun("", 1, "x" * 5000 + "END"))
    with pytest.raises(CephError) as raised:
        ceph.filesystems("/etc/ceph", "ceph-link")
    assert str(raised.value).endswith("END")
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize("stdout", ["not json", '{"name": "fs1"}', '[{"id": 1}]', "[1]", "null"])
def test_filesystems_unexpected_output(monkeypatch, stdout):
    monkeypatch.setattr(ceph.subprocess, "run", FakeRun(stdout))
    with pytest.raises(CephError, match="ceph fs ls: unexpected output"):
        ceph.filesystems("/etc/ceph", "ceph-link")


@pytest.mark.parametrize(
    "exc",
    [
        subprocess.TimeoutExpired(["ceph"], 35),
        FileNotFoundError(2, "No such file or directory", "/usr/bin/ceph"),
    ],
)
def test_filesystems_timeout_or_no_ceph_cli(monkeypatch, exc):
    monkeypatch.setattr(ceph.subprocess, "run", FakeRun(exc=exc))
    with pytest.raises(CephError, match="^ceph fs ls failed: "):
        ceph.filesystems("/etc/ceph", "ceph-link")


@pytest.mark.parametrize("value", ["[fd00::1", "[fd00::1]6789", "[fd00::1]:"])
def test_mon_address_rejects_malformed_brackets(value):
    with pytest.raises(InvalidProviderDataError):
        ceph.mon_address(value)
