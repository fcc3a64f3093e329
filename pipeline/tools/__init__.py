"""Tools used on a finished run: python -m pipeline.tools.evaluate | export | chat | serve | sample | score | plot."""
