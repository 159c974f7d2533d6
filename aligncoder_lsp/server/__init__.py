"""The language server: protocol fixes, state, and one module per feature."""
