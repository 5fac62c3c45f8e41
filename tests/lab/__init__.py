"""Tests of the lab itself (real namespaces, real daemons)."""
