"""The learning loop's services, one module a concern.

- `trigger`: decisions become examples and advance the retrain counter; crossing the batch size (or the
  schedule, or "Retrain now") creates exactly one queued run.
- `runs`: a run's lifecycle: start under its row lock, heartbeat, progress, failure, the sweeper, and the
  orchestration of one retrain (examples, training, saving, gate, promotion).
- `dataset`: which examples and labels a retrain uses, with their inverse-propensity weights.
- `hparams`: the hyper-parameters a platform retrain trains with, and in which order they are resolved.
- `gate`: the candidate against the active model on the frozen holdout, and the verdict (`GateVerdict`).
- `embedding`: decided images embedded into the feature cache ahead of the next retrain.
- `schedules`: the beat rows that check the trigger and sweep runs.
"""
