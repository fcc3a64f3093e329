"""What tests share, by topic: runs (paths, compose, pipeline/run.py in a subprocess, reading a run dir back),
resume and distributed (interrupted and 2-rank runs), tiny_models (the tiny model built in code), exactness
(our layouts against TRL's per-row numbers), servers and judge_stub (HTTP servers in child processes)."""
