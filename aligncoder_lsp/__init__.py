"""aligncoder-lsp: repository-aware code completion from local models."""

__version__ = "0.1.0"
