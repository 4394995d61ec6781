"""Reads. Nothing here writes; pages, the API and services call these to look at state."""
