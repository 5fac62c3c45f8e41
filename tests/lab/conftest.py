"""Fixtures for the lab tests: machines (network + mount namespaces) made and destroyed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

from lab import procs
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
