"""The lab: real daemons for the charms on one host (the product's embedded default)."""
