"""Rows for every stage: loader.py (load_stage_data: read, detect the format, convert, split held-out rows, limit),
sources.py (files, hub ids, built-ins), formats.py and llamafactory.py / seed_formats.py (converters to TRL's shapes),
registry.py (dataset_info.json), mixing.py (several sources in one run), errors.py (bad rows: raised or counted)."""
