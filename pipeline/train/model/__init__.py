"""The model side: build.py (policy and reference from a hub id, path or GGUF; LoRA, quantization; load errors
explained), templates.py (the one render-the-chat-then-tokenize path), sharded.py (ZeRO-3 sharded loading)."""
