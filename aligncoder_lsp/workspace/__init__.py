"""Workspace files: discovery and the guarded reader."""
