"""Prove that each charm ships exactly what the tests install.

For every ``charms/<name>/requirements.txt`` (what the built charm's ``venv/`` holds):

1. every requirement is an exact pin (``name==version``), equal to the pin of the same
   package in ``requirements/constraints.txt`` (the one resolution the tox envs install);
2. the file is closed: every dependency of a listed package, on the Python of every platform
   the charm's ``charmcraft.yaml`` lists, is listed too (so the build installs them with
   ``--no-deps`` and nothing is resolved at pack time);
3. every pinned release supports the Python of every listed platform (``Requires-Python``):
   the tests run on the host's Python, the charm on the base's.

The closure is read from the installed packages' metadata, so run it where the charms'
requirements are installed (``tox -e lint`` does). Exits 1 with one line per problem, each
naming the file and the fix. The platforms (each base's Python and glibc) are defined here
once; ``lab/build.py`` builds a venv for each.

    python -m lab.pins [REPO_ROOT]
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import NamedTuple

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

#: ``/usr/bin/python3`` and glibc of each Ubuntu base a charmcraft.yaml may list.
BASES = {"ubuntu@22.04": ("3.10", (2, 35)), "ubuntu@24.04": ("3.12", (2, 39))}
#: Juju's architecture names → the machine names of wheel platform tags.
ARCHES = {"amd64": "x86_64", "arm64": "aarch64", "ppc64el": "ppc64le", "s390x": "s390x"}


class Platform(NamedTuple):
    """One platform a charm is built for: ``ubuntu@22.04:amd64``."""

    base: str  #: ``ubuntu@22.04``
    arch: str  #: Juju's name: ``amd64``
    python: str  #: the base's Python, ``major.minor``
    glibc: tuple[int, int]  #: the newest manylinux a wheel for it may need

    @property
    def name(self) -> str:
        """``ubuntu@22.04-amd64``: how charmcraft names the platform's .charm file."""
        return f"{self.base}-{self.arch}"

    def manifest_base(self) -> dict[str, object]:
        """The platform as an entry of manifest.yaml's ``bases`` (what Juju matches)."""
        name, _, channel = self.base.partition("@")
        return {"name": name, "channel": channel, "architectures": [self.arch]}


def platforms(charm_dir: Path) -> list[Platform]:
    """The platforms a charm's charmcraft.yaml lists, in its order.

    Raises:
        SystemExit: a base or architecture this repository does not know.
    """
    path = charm_dir / "charmcraft.yaml"
    listed = yaml.safe_load(path.read_text()).get("platforms") or {}
    found = []
    for key in listed:
        base, _, arch = str(key).partition(":")
        if base not in BASES or arch not in ARCHES:
            raise SystemExit(
                f"{path}: platform {key}: unknown base or architecture; known: "
                f"{', '.join(BASES)} on {', '.join(ARCHES)} (lab/pins.py BASES, ARCHES)"
            )
        python, glibc = BASES[base]
        found.append(Platform(base, arch, python, glibc))
    return found


def read_requirements(path: Path) -> list[tuple[int, str]]:
    """The (line number, requirement) pairs of a pip requirements file, comments dropped."""
    lines = path.read_text().splitlines()
    return [
        (n, line.split("#", 1)[0].strip())
        for n, line in enumerate(lines, 1)
        if line.split("#", 1)[0].strip()
    ]


def read_pins(path: Path) -> dict[str, str]:
    """Package name (canonical) → pinned version, from a ``name==version`` constraints file."""
    pins: dict[str, str] = {}
    for _, text in read_requirements(path):
        req = Requirement(text)
        pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return pins


def requirement_needed(req: Requirement, extras: set[str], pythons: list[str]) -> bool:
    """Whether a dependency applies on any of these Pythons (its marker, with these extras)."""
    if req.marker is None:
        return True
    return any(
        req.marker.evaluate(
            {"python_version": py, "python_full_version": f"{py}.0", "extra": extra}
        )
        for py in pythons
        for extra in extras | {""}
    )


def check_pins(path: Path, pins: dict[str, str]) -> tuple[dict[str, Requirement], list[str]]:
    """The requirements a file lists (by canonical name), and the ones not pinned as tested."""
    problems = []
    listed: dict[str, Requirement] = {}
    for number, text in read_requirements(path):
        where = f"{path}:{number}"
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{where}: {text!r} is not a requirement ({exc})")
            continue
        name = canonicalize_name(req.name)
        listed[name] = req
        specs = list(req.specifier)
        pinned = pins.get(name)
        if pinned is None:
            problems.append(
                f"{where}: {req.name} is not pinned in requirements/constraints.txt; "
                "add it to requirements/constraints.in and refresh constraints.txt"
            )
        elif len(specs) != 1 or specs[0].operator != "==" or specs[0].version != pinned:
            problems.append(
                f"{where}: {text!r} is not the pin requirements/constraints.txt holds; "
                f"write {req.name}=={pinned}"
            )
    return listed, problems


def check_closed(
    path: Path, listed: dict[str, Requirement], pins: dict[str, str], pythons: list[str]
) -> list[str]:
    """The dependencies of listed packages (on these Pythons) that are missing or mis-pinned."""
    problems = []
    for req in listed.values():
        try:
            meta = importlib.metadata.metadata(req.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(
                f"{path}: {req.name} is not installed here, its dependencies cannot "
                "be checked (run in an env with the charm's requirements)"
            )
            continue
        supported = SpecifierSet(",".join(meta.get_all("Requires-Python") or []))
        too_new = [py for py in pythons if not supported.contains(f"{py}.0")]
        if too_new:
            problems.append(
                f"{path}: {req.name} {meta['Version']} requires Python {supported}, but a "
                f"listed platform runs Python {', '.join(too_new)}; pin a release that "
                "supports it in requirements/constraints.in"
            )
        requires = meta.get_all("Requires-Dist") or []
        for dep in map(Requirement, requires):
            dep_name = canonicalize_name(dep.name)
            if not requirement_needed(dep, set(req.extras), pythons):
                continue
            if dep_name not in listed:
                pinned = pins.get(dep_name, "<pin it in constraints>")
                problems.append(
                    f"{path}: {req.name} needs {dep} (Python {', '.join(pythons)}), "
                    f"which is not listed; add {dep.name}=={pinned}"
                )
            elif dep_name in pins and not dep.specifier.contains(pins[dep_name], prereleases=True):
                problems.append(
                    f"{path}: {req.name} needs {dep}, but {dep.name} is pinned to "
                    f"{pins[dep_name]}; refresh requirements/constraints.txt"
                )
    return problems


def check_charm(charm_dir: Path, pins: dict[str, str]) -> list[str]:
    """The problems of one charm's requirements.txt (empty when it is exact and closed)."""
    path = charm_dir / "requirements.txt"
    listed, problems = check_pins(path, pins)
    pythons = sorted({platform.python for platform in platforms(charm_dir)})
    return problems + check_closed(path, listed, pins, pythons)


def main() -> int:
    """Check every charm of the repository; print the problems; 1 when there are any."""
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    pins = read_pins(root / "requirements" / "constraints.txt")
    charms = sorted(p.parent for p in root.glob("charms/*/requirements.txt"))
    problems = [problem for charm in charms for problem in check_charm(charm, pins)]
    for problem in problems:
        print(f"pins: {problem}", file=sys.stderr)
    if not problems:
        print(f"pins: {len(charms)} charms: exact pins, equal to constraints.txt, closed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
