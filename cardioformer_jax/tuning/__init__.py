"""Hyper-parameter tuning with Optuna (docs/tuning.md; command: `cardioformer_jax.tune`).

* `search`: the search-space files (``configs/search/<model_name>.py``) and the trial
  configs they make;
* `study`: the study in a database shared by any number of workers, its objective (a normal
  training run per trial, pruned on the per-epoch validation metric, the test split never
  read) and the worker loop;
* `report`: ``best_config.py``, ``best_trial.json`` and ``tuning_report.md`` with its plots.
"""
