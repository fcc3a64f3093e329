"""Adapters that run environments written for other libraries through TRL's loop unchanged (openenv.py: OpenEnv)."""
