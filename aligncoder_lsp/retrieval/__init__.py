"""Retrieval of repository context for one completion request."""
