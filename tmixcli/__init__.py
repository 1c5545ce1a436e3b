"""tmix: answer questions about long documents with a local LLM, TriangleMix prefill and reusable KV files."""

__version__ = "0.1.0"
