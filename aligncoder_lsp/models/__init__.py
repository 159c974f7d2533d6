"""Model backends and the embedded default models."""
