"""What a run is, resolved once: schemas, the stage table, checks, the frozen run plan, the run directory.

Light (no torch) and imports none of pipeline.train / launch / tools: they all import it.
"""
