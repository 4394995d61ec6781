"""The beat schedules of the learning loop: the nightly trigger check and the training-run sweeper.

They are rows of django-celery-beat's database scheduler rather than `CELERY_BEAT_SCHEDULE` entries so an admin can
change or pause them in the Django admin; `manage.py sync_models` creates them once and never overwrites an edit.
"""

from moderation import outbox

SCHEDULES = {
    "Vigia: retrain on schedule": (outbox.CHECK_TRAINING_TRIGGER, {"crontab": {"minute": "0", "hour": "3"}}),
    "Vigia: sweep training runs": (outbox.SWEEP_TRAINING_RUNS, {"interval": {"every": 60, "period": "seconds"}}),
}


def ensure_training_schedules() -> int:
    """Create the beat rows for the trigger check and the sweeper, leaving rows an admin already edited alone."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = 0
    for name, (task, schedule) in SCHEDULES.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        if "crontab" in schedule:
            crontab, _ = CrontabSchedule.objects.get_or_create(**schedule["crontab"], timezone="UTC")
            PeriodicTask.objects.create(name=name, task=task, crontab=crontab)
        else:
            interval, _ = IntervalSchedule.objects.get_or_create(**schedule["interval"])
            PeriodicTask.objects.create(name=name, task=task, interval=interval)
        created += 1
    return created
