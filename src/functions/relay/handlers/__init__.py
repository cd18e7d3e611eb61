"""Lambda entry points: a decorator stack and one call each, no logic."""
