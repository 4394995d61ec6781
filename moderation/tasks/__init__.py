"""Celery tasks, thin: primary keys in, re-read state, call a service. Split by queue."""
