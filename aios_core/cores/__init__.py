"""LLM cores: the interface (base), the shared batching engine loop, and the engines."""
