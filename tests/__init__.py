"""Tests that span the charms: functional (real daemons), lab, integration (real Juju)."""
