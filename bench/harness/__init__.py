"""What the benchmarks share, so that each script under bench/ holds only its own measurements.

- `stack`: a fresh PostgreSQL database and broker, the settings' environment, Django, the web server and Celery
  workers under the devstack supervisor, an API token.
- `workload`: Fashion-MNIST photos as uploads (JPEG or PNG), a served model trained on them, posting listings
  and waiting until their photos are scored.
- `report`: percentiles and summaries, the machine description, results JSON written atomically.
- `simulation`: the learning-loop benchmark's desk under a simulated moderator, recorded round by round.

The scripts run as `python bench/NAME.py`: each puts the repository root first on `sys.path`, which makes this
package importable as `bench.harness` (`bench/` itself stays a directory of scripts, not a package).
"""
