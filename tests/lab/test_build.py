"""scripts/build-charms: what it builds holds what a charm packed by charmcraft holds.

``build/<charm>/`` (the host's Python: what the lab runs) and one ``.charm`` per listed platform,
whose venv holds wheels for that base's Python; the bundle points at those ``.charm`` files.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from lab import build, pins

CHARMS = ("lxd", "ovn-bridge", "ceph-link")
#: What every charm imports first, and the shared package staged into lib/.
PROBE = "import ops, pydantic, charm_common, charm; print(ops.__file__)"


@pytest.fixture(scope="module")
def built() -> dict[str, list[Path]]:
    """Every charm built once: ``[build/<charm>/, <charm>_<platform>.charm, ...]``."""
    return {name: build.build_charm(build.CHARMS / name) for name in CHARMS}


def _yaml(data: str | bytes) -> dict:
    return yaml.safe_load(data)


def _import(charm_dir: Path, python: str) -> subprocess.CompletedProcess[str]:
    """Import the charm as dispatch runs it: only lib/ and venv/ (and src/) on the path."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "lib:venv:src"}
    return subprocess.run(  # noqa: S603 - the test's own command
        [python, "-S", "-c", PROBE],
        cwd=charm_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("name", CHARMS)
def test_build_dir_is_a_packed_charm(built: dict[str, list[Path]], name: str) -> None:
    charm = built[name][0]
    assert charm == build.BUILD / name
    assert (charm / "dispatch").read_text() == build.DISPATCH
    assert os.access(charm / "dispatch", os.X_OK)
    assert os.access(charm / "src" / "charm.py", os.X_OK)
    for hook in build.HOOKS:
        assert os.readlink(charm / "hooks" / hook) == "../dispatch"
    assert (charm / "lib" / "charm_common" / "certs.py").is_file()
    assert not (charm / "tests").exists()
    # Byte code is compiled once in the build (units link it; a .charm leaves it out).
    for module in (charm / "src" / "charm.py", charm / "venv" / "ops" / "__init__.py"):
        assert Path(importlib.util.cache_from_source(str(module))).is_file(), module
    # The machine's Python imports the charm from its own venv, not from the test env.
    done = _import(charm, "/usr/bin/python3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(charm / "venv" / "ops" / "__init__.py")


@pytest.mark.parametrize("name", CHARMS)
def test_yaml_files_are_charmcraft_yaml(built: dict[str, list[Path]], name: str) -> None:
    charm = built[name][0]
    source = _yaml((build.CHARMS / name / "charmcraft.yaml").read_text())
    meta = _yaml((charm / "metadata.yaml").read_text())
    assert meta["name"] == name
    assert meta["display-name"] == source["title"]
    for key in ("summary", "requires", "provides", "peers", "subordinate", "assumes"):
        assert meta.get(key) == source.get(key), key
    assert not set(meta) & {"platforms", "parts", "config", "actions", "type", "title"}
    assert _yaml((charm / "config.yaml").read_text()) == source["config"]
    assert set(_yaml((charm / "config.yaml").read_text())["options"]) == set(
        source["config"]["options"]
    )
    if "actions" in source:
        assert _yaml((charm / "actions.yaml").read_text()) == source["actions"]
    manifest = _yaml((charm / "manifest.yaml").read_text())
    assert [
        f"{b['name']}@{b['channel']}:{a}" for b in manifest["bases"] for a in b["architectures"]
    ] == list(source["platforms"])


@pytest.mark.parametrize("name", CHARMS)
def test_one_charm_file_per_platform_with_its_pythons_wheels(
    built: dict[str, list[Path]], name: str
) -> None:
    platforms = pins.platforms(build.CHARMS / name)
    assert [p.name for p in built[name][1:]] == [f"{name}_{p.name}.charm" for p in platforms]
    for platform, packed in zip(platforms, built[name][1:], strict=True):
        with zipfile.ZipFile(packed) as zf:
            names = set(zf.namelist())
            modes = {info.filename: info.external_attr >> 16 for info in zf.infolist()}
            manifest = _yaml(zf.read("manifest.yaml"))
        assert {"dispatch", "src/charm.py", "metadata.yaml", "config.yaml"} <= names
        assert modes["dispatch"] & 0o111 and modes["src/charm.py"] & 0o111
        assert stat.S_ISLNK(modes["hooks/install"])
        assert "lib/charm_common/__init__.py" in names and "venv/ops/__init__.py" in names
        assert not any("__pycache__" in n or n.startswith(("tests/", "venv/bin/")) for n in names)
        assert manifest["bases"] == [
            {"name": "ubuntu", "channel": platform.base[7:], "architectures": [platform.arch]}
        ]
        # Compiled dependencies are the base's CPython's, never the host's.
        tag = "cpython-" + platform.python.replace(".", "")
        compiled = [n for n in names if n.startswith("venv/pydantic_core/") and n.endswith(".so")]
        assert compiled and all(tag in n for n in compiled), compiled


def _python(version: str) -> str | None:
    """An interpreter of ``version`` (``3.10``) that runs: on PATH, or one pyenv installed."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        found = Path(root.stdout.strip()).glob(f"versions/{version}.*/bin/python{version}")
        candidates += [str(path) for path in sorted(found, reverse=True)]
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        done = subprocess.run(probe, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.parametrize("name", CHARMS)
def test_charm_file_imports_on_its_platforms_python(
    built: dict[str, list[Path]], name: str, tmp_path: Path
) -> None:
    checked = []
    for platform, packed in zip(pins.platforms(build.CHARMS / name), built[name][1:], strict=True):
        python = _python(platform.python)
        if python is None:
            continue
        with zipfile.ZipFile(packed) as zf:
            zf.extractall(tmp_path / platform.name)
        done = _import(tmp_path / platform.name, python)
        assert done.returncode == 0, f"{platform.name} on {python}: {done.stderr}"
        checked.append(platform.name)
    if not checked:
        pytest.skip("no python3.10/python3.12 on this host to import the platform builds with")


def test_bundle_points_at_the_built_charms(built: dict[str, list[Path]]) -> None:
    written = _yaml(build.write_bundle().read_text())
    source = _yaml(build.BUNDLE.read_text())
    apps = written["applications"]
    assert {app: spec["charm"] for app, spec in apps.items()} == {
        name: f"./{name}_ubuntu@24.04-amd64.charm" for name in CHARMS
    }
    for spec in apps.values():
        assert (build.BUILD / spec["charm"]).is_file()
    assert written["relations"] == source["relations"]
    for app, spec in source["applications"].items():
        assert {k: v for k, v in apps[app].items() if k != "charm"} == {
            k: v for k, v in spec.items() if k != "charm"
        }


def test_a_source_only_dependency_that_compiles_is_named(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("netifaces==0.11.0\n")  # C extension, source release only
    platform = pins.Platform("ubuntu@22.04", "amd64", "3.10", (2, 35))
    with pytest.raises(build.BuildError, match="netifaces==0.11.0 has no wheel"):
        build.install_venv(requirements, platform)


def test_a_lab_test_charm_builds_with_its_linked_module_and_the_shared_pins() -> None:
    # probe-sub links lib/probe_log.py to probe's; it has no requirements.txt of its own
    source = build.REPO / "tests" / "lab" / "charms" / "probe-sub"
    assert (source / "lib" / "probe_log.py").is_symlink()
    assert build.requirements_of(source) == build.TEST_CHARM_REQUIREMENTS

    charm = build.build_dir(source)

    module = charm / "lib" / "probe_log.py"
    assert not module.is_symlink()
    assert module.read_bytes() == (source / "lib" / "probe_log.py").read_bytes()
    assert os.access(charm / "src" / "charm.py", os.X_OK)
    done = subprocess.run(  # noqa: S603 - the test's own command
        ["/usr/bin/python3", "-S", "-c", "import ops, probe_log, charm"],
        cwd=charm,
        env={"PYTHONPATH": "lib:venv:src"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
