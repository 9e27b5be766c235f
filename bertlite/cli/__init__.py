"""Thin Hydra entry points. The only place where configs are instantiated."""
