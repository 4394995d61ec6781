"""The desk's local stack: what `make run`, `make test`, the benchmarks and test fixtures need to run processes.

- `processes`: process-level helpers (PIDs, process groups, the parent-death signal) and `ProcessSpec`.
- `supervisor`: `Supervisor`, which starts processes, prefixes their output and stops them all together.
- `redis`: an embedded Redis server for runs that find none.
- `__main__`: `python -m moderation.devstack with-redis -- COMMAND` (`make test`).
- `desk` and `demo`: the pieces of `manage.py rundesk` (`make run`); only these two import Django.

Everything but `desk` and `demo` deliberately avoids Django: `make test` uses this package to provide a Redis
before any settings are loaded. This module imports nothing, so importing a submodule stays cheap.
"""
