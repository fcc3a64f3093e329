"""`python -m pipeline.score FILE reward=...`: the offline reward scorer (pipeline/tools/score.py)."""

import logging

from pipeline.tools.score import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
