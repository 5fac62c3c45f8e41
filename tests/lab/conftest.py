"""Fixtures for the lab tests: machines (network + mount namespaces) made and destroyed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import pytest

from lab import machines, procs
from lab.machines import Lab


@contextlib.contextmanager
def machine_lab(prefix: str, names: Sequence[str]) -> Iterator[Lab]:
    """A lab of machines ``names`` under a fresh temporary root; destroyed and checked after."""
    root = tempfile.mkdtemp(prefix=prefix)
    os.chmod(root, 0o711)  # noqa: S103 - as lab.hosts.make_root: traversable, not listable
    lab = Lab(root)
    try:
        for name in names:
            lab.create_machine(name)
        yield lab
    finally:
        left = lab.destroy()
        if os.path.isdir(root) and not procs.mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)
        assert not left, left


@contextlib.contextmanager
def bundle_model_root(prefix: str, bundle: str) -> Iterator[str]:
    """A model root (not created yet) next to ``bundle.yaml`` holding ``bundle``.

    What is left of its lab is destroyed afterwards; skips where machines cannot be made.
    """
    reason = machines.unavailable_reason()
    if reason:
        pytest.skip(reason)
    tmp = tempfile.mkdtemp(prefix=prefix)
    with open(os.path.join(tmp, "bundle.yaml"), "w") as f:
        f.write(bundle)
    model_root = os.path.join(tmp, "model")
    try:
        yield model_root
    finally:
        if os.path.exists(os.path.join(model_root, "machines.json")):
            Lab(model_root).destroy()
        shutil.rmtree(tmp, ignore_errors=True)
