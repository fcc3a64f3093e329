"""Process-level guards: distributed.py (process group set-up, collective timeouts named), guards.py (NaN guard)."""
