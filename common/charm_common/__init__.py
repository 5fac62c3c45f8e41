"""Code shared by the lxd, ovn-bridge and ceph-link charms.

It lives once in the repository and is staged into each charm's ``lib/`` when the charm
is built (``scripts/build-charms``); tests put this directory on ``PYTHONPATH`` instead.
"""
