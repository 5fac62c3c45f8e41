"""Functional tests: the workload modules against real LXD daemons."""
