"""Writes. Each module owns one concern; views and tasks call exactly one service function per action."""
