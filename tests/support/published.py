"""What the outbox published during a test, recorded instead of sent to Redis."""

from collections import defaultdict


class Published:
    """Tasks published through `moderation.outbox.publish`, by name; each entry is the task's argument.

    A task with one argument (all of the desk's take a list of ids or one id) is recorded as that argument, so
    `published[SCORE_IMAGES] == [[1, 2]]` reads like the ids that went out.
    """

    def __init__(self):
        self.by_task: dict[str, list] = defaultdict(list)

    def __call__(self, task_name: str, args) -> bool:
        args = list(args)
        self.by_task[task_name].append(args[0] if len(args) == 1 else args)
        return True

    def __getitem__(self, task_name: str) -> list:
        return self.by_task[task_name]
