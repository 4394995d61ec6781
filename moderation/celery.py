"""Celery application.

Reliability settings follow what was measured for this stack: tasks are acknowledged only after they ran
(`acks_late`) and are given back when the child dies (`reject_on_worker_lost`), each child takes one message at a
time, and messages are JSON only because workers trust what the broker hands them. No model is ever loaded in the
parent process: TensorFlow run before a fork hangs the children, so scoring loads lazily in each child. A worker
busy when Redis goes away reconnects instead of exiting (`moderation.redis_transport`).
"""

import os

from celery import Celery

from moderation import redis_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moderation.settings")
# Before any connection: a lost Redis connection must stay a connection error (`moderation/redis_transport.py`).
redis_transport.install()

app = Celery("moderation")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
