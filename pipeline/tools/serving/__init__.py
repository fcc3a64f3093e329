"""The OpenAI-compatible server behind `python -m pipeline.tools.serve`: padded-batch decoding (decode), the queue
that groups concurrent requests into batches (batcher), the HTTP routes (api, schemas) and the browser chat page."""
