"""Build each charm as ``charmcraft pack``'s charm plugin lays it out; zip one per platform.

    build/<charm>/                      the charm for this host's Python: what the lab runs
      dispatch                          charmcraft's script: PYTHONPATH=lib:venv ./src/charm.py
      hooks/{install,start,upgrade-charm} -> ../dispatch
      src/ (charm.py executable)  lib/ (the charm's own, with common/charm_common staged in)
      venv/                             the pinned requirements, a flat site-packages
      metadata.yaml config.yaml actions.yaml manifest.yaml   from the unified charmcraft.yaml
    build/<charm>_<base>-<arch>.charm   the zip Juju deploys, venv/ for that base's Python
    build/lxd-cluster.yaml              bundles/lxd-cluster.yaml with charm: at those zips

Hand-written because ``charmcraft pack`` refuses this Debian host (it builds in an Ubuntu
instance, which needs LXD images or Multipass). It installs the pinned requirements with
``--no-deps`` (``lab/pins.py`` proves them exact, equal to the tested pins, and closed), for a
platform with pip's ``--python-version``/``--platform``/``--only-binary=:all:`` so the zip
holds wheels for the base's Python, not the host's. A release with no such wheel is built
once into a wheel here only when it is pure Python (``py3-none-any``); otherwise the build
stops and names it. Venvs are cached by their inputs under ``build/.cache``: a rebuild with
unchanged pins takes seconds.

    scripts/build-charms [NAME...]       (every charm of charms/ when no NAME)
"""

from __future__ import annotations

import argparse
import compileall
import fnmatch
import hashlib
import importlib.metadata
import json
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from lab.pins import ARCHES, Platform, platforms, requirement_needed

REPO = Path(__file__).resolve().parent.parent
CHARMS = REPO / "charms"
COMMON = REPO / "common" / "charm_common"
BUILD = REPO / "build"
BUNDLE = REPO / "bundles" / "lxd-cluster.yaml"

#: charmcraft's ``DISPATCH_CONTENT`` (charm plugin), the script Juju runs for every event.
DISPATCH = (
    "#!/bin/sh\n\n"
    'JUJU_DISPATCH_PATH="${JUJU_DISPATCH_PATH:-$0}" PYTHONPATH=lib:venv \\\n'
    "  exec ./src/charm.py\n"
)
#: The digest of what ``build/<charm>/`` was built from.
STAMP = ".build-stamp"
#: Hooks charmcraft links to dispatch for Juju versions without dispatch support.
HOOKS = ("install", "start", "upgrade-charm")
#: The charmcraft release whose layout and manifest this build reproduces.
CHARMCRAFT_VERSION = "4.5.0"
#: charmcraft.yaml keys that are not metadata.yaml keys (config and actions get own files).
NOT_METADATA = {"type", "platforms", "bases", "base", "build-base", "parts", "charmhub"}
NOT_METADATA |= {"config", "actions", "charm-libs", "links", "title"}
#: Source entries a built charm leaves out (charmcraft's .jujuignore defaults, and tests).
IGNORED = ("tests", "charmcraft.yaml", "__pycache__", "*.pyc", ".*", "venv", "build", "*.charm")


class BuildError(Exception):
    """The charm cannot be built; the message says why and what to do."""


def charmcraft_yaml(charm_dir: Path) -> dict[str, Any]:
    """The charm's unified charmcraft.yaml."""
    data = yaml.safe_load((charm_dir / "charmcraft.yaml").read_text())
    if not isinstance(data, dict) or "name" not in data:
        raise BuildError(f"{charm_dir}/charmcraft.yaml: not a charm definition (no name)")
    return data


# ---------------------------------------------------------------------------- venvs
def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


#: This module's own code: part of every cache key, so that a build or venv made by an
#: older recipe (say, before byte code was compiled in) is not taken for a current one.
RECIPE = _digest(Path(__file__).read_bytes())


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603


def platform_tags(platform: Platform) -> list[str]:
    """The pip ``--platform`` values a wheel for this base may carry (manylinux to its glibc)."""
    machine = ARCHES[platform.arch]
    major, newest = platform.glibc
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(newest, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{tag}_{machine}" for tag, minor in legacy.items() if minor <= newest]


def _target_args(platform: Platform | None) -> list[str]:
    if platform is None:  # the Python running this build: pip may build from source
        return []
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version"]
    args.append(platform.python)
    for tag in platform_tags(platform):
        args += ["--platform", tag]
    return args


def _pure_wheel(requirement: str, wheels: Path) -> None:
    """Build ``requirement`` (a source release) into a pure-Python wheel in ``wheels``.

    Raises:
        BuildError: it cannot be built, or its wheel is not pure Python.
    """
    with tempfile.TemporaryDirectory(dir=wheels.parent) as scratch:
        done = _pip("wheel", "--no-deps", "--no-binary=:all:", "-w", scratch, requirement)
        built = sorted(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or not built:
            raise BuildError(
                f"no wheel of {requirement} fits, and building one failed:\n{done.stderr[-2000:]}"
            )
        tags = parse_wheel_filename(built[0].name)[3]
        if not all(tag.abi == "none" and tag.platform == "any" for tag in tags):
            raise BuildError(
                f"{requirement} has no wheel for every platform's Python and compiles code "
                f"({built[0].name}); pin a release (or a drop-in fork) that ships manylinux "
                "wheels for each base's Python in requirements/constraints.in"
            )
        shutil.move(built[0], wheels / built[0].name)


def _missing(stderr: str) -> str | None:
    """The requirement pip found no distribution for, from its error output."""
    marker = "No matching distribution found for "
    for line in stderr.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def install_venv(requirements: Path, platform: Platform | None) -> Path:
    """The venv (flat site-packages) of ``requirements`` for ``platform`` (None: this Python).

    Cached under ``build/.cache/venv`` by the requirements, the target and :data:`RECIPE`;
    installed with ``--no-deps``: the requirements are the whole closure (``lab/pins.py``).

    Raises:
        BuildError: a requirement cannot be installed for the target.
    """
    target = platform.name if platform else f"host-{sys.implementation.cache_tag}"
    cache = BUILD / ".cache"
    venv = cache / "venv" / f"{target}-{_digest(RECIPE, requirements.read_bytes(), target)}"
    if (venv / ".complete").is_file():
        return venv
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    args = ["install", "--quiet", "--no-deps", "--no-compile", "--target", str(venv)]
    args += ["--find-links", str(wheels), *_target_args(platform), "-r", str(requirements)]
    built: set[str] = set()
    while (done := _pip(*args)).returncode != 0:
        missing = _missing(done.stderr)
        if platform is None or missing is None or missing in built:
            raise BuildError(
                f"installing {requirements} for {target} failed:\n{done.stderr[-3000:]}"
            )
        _pure_wheel(missing, wheels)
        built.add(missing)
        shutil.rmtree(venv, ignore_errors=True)
    # Console scripts name this machine's interpreter; charmcraft ships site-packages only.
    shutil.rmtree(venv / "bin", ignore_errors=True)
    (venv / ".complete").write_text("")
    return venv


def venv_problems(venv: Path, python: str) -> list[str]:
    """What ``pip check`` would say of ``venv`` on ``python``: missing or mismatched deps."""
    dists = {
        canonicalize_name(d.metadata["Name"]): d
        for d in importlib.metadata.distributions(path=[str(venv)])
    }
    problems = []
    for name, dist in sorted(dists.items()):
        for dep in map(Requirement, dist.requires or []):
            if not requirement_needed(dep, set(), [python]):
                continue
            have = dists.get(canonicalize_name(dep.name))
            if have is None:
                problems.append(f"{name} {dist.version} requires {dep.name}, which is missing")
            elif not dep.specifier.contains(have.version, prereleases=True):
                problems.append(
                    f"{name} {dist.version} requires {dep}, but {have.version} is installed"
                )
    return problems


# ---------------------------------------------------------------------------- layout
def _yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def generated_files(meta: dict[str, Any], bases: Sequence[Platform]) -> dict[str, bytes]:
    """metadata/config/actions/manifest yaml, as charmcraft writes them from charmcraft.yaml."""
    metadata = {k: v for k, v in meta.items() if k not in NOT_METADATA}
    if "title" in meta:
        metadata = {"name": meta["name"], "display-name": meta["title"], **metadata}
    files = {"metadata.yaml": _yaml(metadata)}
    if meta.get("config"):
        files["config.yaml"] = _yaml(meta["config"])
    if meta.get("actions"):
        files["actions.yaml"] = _yaml(meta["actions"])
    manifest = {
        "charmcraft-version": CHARMCRAFT_VERSION,
        "charmcraft-started-at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "bases": [platform.manifest_base() for platform in bases],
        "analysis": {
            "attributes": [
                {"name": "language", "result": "python"},
                {"name": "framework", "result": "operator"},
            ]
        },
    }
    files["manifest.yaml"] = _yaml(manifest)
    return files


def _tree(root: Path, ignore: Sequence[str] = IGNORED) -> Iterator[tuple[Path, Path]]:
    """(path inside ``root``, file) of every file under ``root`` none of whose parts is ignored.

    A symbolic link to a file is that file (its content is copied): the lab's test charms
    share a module by links (``tests/lab/charms/probe-sub/lib/probe_log.py``), and a built
    charm must hold what it imports.
    """
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        ignored = any(fnmatch.fnmatch(part, p) for part in relative.parts for p in ignore)
        if not ignored and path.is_file():
            yield relative, path


def charm_files(charm_dir: Path) -> Iterator[tuple[Path, Path]]:
    """(path in the charm, source file) of the charm's own code with charm_common staged in."""
    yield from _tree(charm_dir)
    for relative, path in _tree(COMMON):
        yield Path("lib") / "charm_common" / relative, path


def _executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


#: The requirements of the lab's test charms that name none of their own.
TEST_CHARM_REQUIREMENTS = REPO / "tests" / "lab" / "charms" / "requirements.txt"


def requirements_of(charm_dir: Path) -> Path:
    """The charm's ``requirements.txt``; a lab test charm without one: the shared file."""
    own = charm_dir / "requirements.txt"
    return own if own.is_file() else TEST_CHARM_REQUIREMENTS


def build_dir(charm_dir: Path) -> Path:
    """``build/<charm>/``: the charm laid out for this host's Python (what the lab runs).

    Not rebuilt when its inputs (the charm's files, charm_common, the pins, this Python,
    :data:`RECIPE`) are those of the last build: a lab deployment of an unchanged charm
    copies nothing.
    """
    meta = charmcraft_yaml(charm_dir)
    dest = BUILD / str(meta["name"])
    files = list(charm_files(charm_dir))
    requirements = requirements_of(charm_dir)
    stamp = _digest(
        RECIPE,
        DISPATCH,
        sys.version,
        requirements.read_bytes(),
        *(f"{rel}:{path.stat().st_mode:o}" for rel, path in files),
        *(path.read_bytes() for _, path in files),
    )
    if (dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp:
        return dest
    venv = install_venv(requirements, None)
    tmp = BUILD / f".{meta['name']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for relative, path in files:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, tmp / relative)
    shutil.copytree(
        venv, tmp / "venv", ignore=shutil.ignore_patterns(".complete"), copy_function=link_or_copy
    )
    for name, content in generated_files(meta, platforms(charm_dir)).items():
        (tmp / name).write_bytes(content)
    (tmp / "dispatch").write_text(DISPATCH)
    _executable(tmp / "dispatch")  # src/charm.py keeps its mode in git, as charmcraft keeps it
    (tmp / "hooks").mkdir()
    for hook in HOOKS:
        (tmp / "hooks" / hook).symlink_to("../dispatch")
    # Byte code for this host's Python, once: each unit's copy of the build links it
    # instead of compiling the charm and its venv again in its first hook (~2 s each).
    compileall.compile_dir(tmp, quiet=2, workers=0)
    (tmp / STAMP).write_text(stamp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def link_or_copy(source: str, dest: str) -> None:
    """Hard-link ``source`` to ``dest`` (a build's files are shared, not copied), else copy."""
    try:
        Path(dest).hardlink_to(source)
    except OSError:
        shutil.copy2(source, dest)


def pack_zip(built: Path, platform: Platform, venv: Path) -> Path:
    """``build/<charm>_<base>-<arch>.charm``: ``built`` with the platform's venv and manifest."""
    target = built.parent / f"{built.name}_{platform.name}.charm"
    manifest = yaml.safe_load((built / "manifest.yaml").read_text())
    manifest["bases"] = [platform.manifest_base()]
    own = [
        (rel, path)
        for rel, path in _tree(built, ignore=("__pycache__", STAMP))
        if rel.parts[0] not in ("venv", "hooks") and rel != Path("manifest.yaml")
    ]
    deps = [
        (Path("venv") / rel, path)
        for rel, path in _tree(venv, ignore=("__pycache__",))
        if rel != Path(".complete")
    ]
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for relative, path in own + deps:
            zf.write(path, relative)
        for hook in HOOKS:  # symlinks, as charmcraft zips them
            info = zipfile.ZipInfo(f"hooks/{hook}")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../dispatch")
        zf.writestr("manifest.yaml", _yaml(manifest))
    tmp.rename(target)
    return target


def build_charm(charm_dir: Path) -> list[Path]:
    """Build ``build/<charm>/`` and one ``.charm`` per platform; the paths made.

    Raises:
        BuildError: a dependency has no fitting wheel, or a platform's venv is inconsistent.
    """
    requirements = charm_dir / "requirements.txt"
    built = build_dir(charm_dir)
    made = [built]
    for platform in platforms(charm_dir):
        venv = install_venv(requirements, platform)
        problems = venv_problems(venv, platform.python)
        if problems:
            raise BuildError(
                f"{built.name} for {platform.name}: the venv is inconsistent "
                f"(fix requirements.txt):\n  " + "\n  ".join(problems)
            )
        made.append(pack_zip(built, platform, venv))
    return made


def write_bundle(bundle: Path = BUNDLE) -> Path:
    """``build/<bundle>``: ``bundle`` with each of this repo's charms at its built ``.charm``.

    Juju takes one file per application: the first platform the charm lists (the bundle's
    ``default-base`` picks the machines' base; rebuild the bundle file for another base by
    editing ``charm:``). Paths are relative to the written file, as Juju resolves them.
    """
    data = yaml.safe_load(bundle.read_text())
    default = str(data.get("default-base", "")).split("/")[0]
    for spec in data["applications"].values():
        source = (bundle.parent / str(spec["charm"])).resolve()
        if not (source / "charmcraft.yaml").is_file():
            continue  # a Charmhub charm
        listed = platforms(source)
        chosen = next((p for p in listed if p.base == default), listed[0])
        name = charmcraft_yaml(source)["name"]
        spec["charm"] = f"./{name}_{chosen.name}.charm"
    target = BUILD / bundle.name
    header = f"# Written by scripts/build-charms from bundles/{bundle.name}: do not edit.\n"
    target.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return target


#: What charmcraft's analysers must find: attributes with these values, every linter OK
#: (or not applicable: pip-check needs a venv with bin/, which charmcraft's own charm
#: plugin does not ship either; additional-files needs charmcraft's build tree).
EXPECTED_ATTRIBUTES = {"language": "python", "framework": "operator"}
PASSING_LINT = ("ok", "nonapplicable")


def analyse(charm_dirs: Sequence[Path], packed: Sequence[Path]) -> list[str]:
    """What ``charmcraft expand-extensions`` and ``charmcraft analyse`` object to (empty: none).

    Needs charmcraft on PATH (``tox -e pack`` installs it from PyPI).
    """
    charmcraft = shutil.which("charmcraft")
    if charmcraft is None:
        return ["charmcraft is not on PATH: run this through `tox -e pack`"]
    problems = []
    for charm_dir in charm_dirs:
        done = subprocess.run(  # noqa: S603 - charmcraft from PATH, our own arguments
            [charmcraft, "expand-extensions"],
            cwd=charm_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"{charm_dir}/charmcraft.yaml: {done.stderr.strip()[-1500:]}")
    for path in packed:
        done = subprocess.run(  # noqa: S603 - charmcraft from PATH, our own arguments
            [charmcraft, "analyse", "--format", "json", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            results = json.loads(done.stdout)
        except json.JSONDecodeError:
            problems.append(f"{path.name}: charmcraft analyse failed: {done.stderr[-1500:]}")
            continue
        for result in results:
            name, value = result["name"], result["result"]
            wanted = EXPECTED_ATTRIBUTES.get(name)
            if (value != wanted) if wanted else (value not in PASSING_LINT):
                problems.append(f"{path.name}: {name}: [{value.upper()}] {result['text']}")
        print(f"{path.name}: " + ", ".join(f"{r['name']} {r['result']}" for r in results))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/build-charms [NAME...]``: build the charms, then the bundle."""
    parser = argparse.ArgumentParser(
        prog="build-charms",
        description="Build charms/NAME (every charm when none is named) into build/NAME/ "
        "and build/NAME_<base>-<arch>.charm, then build/lxd-cluster.yaml.",
    )
    known = sorted(p.parent.name for p in CHARMS.glob("*/charmcraft.yaml"))
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {' '.join(known)}")
    parser.add_argument(
        "--analyse",
        action="store_true",
        help="then check each .charm with charmcraft analyse (tox -e pack)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"no charm {', '.join(unknown)} in charms/ (known: {', '.join(known)})")
    started = time.monotonic()
    names = args.names or known
    packed = []
    try:
        for name in names:
            for path in build_charm(CHARMS / name):
                print(path.relative_to(REPO))
                packed += [path] if path.suffix == ".charm" else []
        if set(names) == set(known):
            print(write_bundle().relative_to(REPO))
    except BuildError as exc:
        print(f"build-charms: error: {exc}", file=sys.stderr)
        return 1
    print(f"build-charms: built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    problems = analyse([CHARMS / name for name in names], packed) if args.analyse else []
    for problem in problems:
        print(f"build-charms: charmcraft: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
