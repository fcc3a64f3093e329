"""Checkpoints: resume.py (complete-or-absent checkpoint-N/, resume=auto, rotation), layouts.py (which files a
checkpoint holds per engine), saving.py (final/ and best/ model saves)."""
