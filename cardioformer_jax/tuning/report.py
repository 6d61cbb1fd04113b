"""The tuner's outputs (docs/tuning.md, "Outputs")."""

from __future__ import annotations

import collections
import os
import pprint
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; before pyplot is imported (by optuna's plots)

import ml_collections  # noqa: E402
import optuna  # noqa: E402
import sqlalchemy.engine  # noqa: E402

from cardioformer_jax.core import logging_utils  # noqa: E402
from cardioformer_jax.tuning import search  # noqa: E402

BEST_CONFIG = "best_config.py"
BEST_TRIAL = "best_trial.json"
REPORT = "tuning_report.md"
PLOTS = "tuning_plots"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
MIN_TRIALS_FOR_IMPORTANCES = 2


def public_url(url: str) -> str:
    """The storage URL without its password."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def best_config_source(config: ml_collections.ConfigDict, header: str) -> str:
    """A config file whose ``get_config()`` returns `config` (every field, as literals)."""
    literal = pprint.pformat(config.to_dict(), indent=1, width=96, sort_dicts=True)
    return (f'"""{header}"""\n\n'
            "import ml_collections\n\n"
            "from cardioformer_jax import config_lib\n\n"
            f"CONFIG = {literal}\n\n\n"
            "def get_config() -> ml_collections.ConfigDict:\n"
            "    config = config_lib.with_defaults(CONFIG)\n"
            "    config_lib.validate_config(config)\n"
            "    return config\n")


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, imported as ``--config=path`` would."""
    return search.import_file(path, "_config").get_config()


def _trial_summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "value": trial.value,
            "params": trial.params, "run": trial.user_attrs.get("run"),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "epochs_reported": len(trial.intermediate_values),
            # What RetryHeartbeatStaleTrialCallback.retried_trial_number reads.
            "retry_of": trial.system_attrs.get("failed_trial"),
            "datetime_start": _iso(trial.datetime_start),
            "datetime_complete": _iso(trial.datetime_complete)}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _plots(view: optuna.Study, plots: Path) -> tuple[str | None, dict[str, float] | None, str]:
    """Writes the PNGs; returns the history file, the importances (None: too few trials or
    no spread) and a note on what is missing."""
    complete = view.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots.mkdir(parents=True, exist_ok=True)
    history = importances = None
    note = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            ax = optuna.visualization.matplotlib.plot_optimization_history(view)
            _save(ax.figure, plots / HISTORY_PNG)
            history = f"{PLOTS}/{HISTORY_PNG}"
        if len(complete) < MIN_TRIALS_FOR_IMPORTANCES:
            note = (f"Parameter importances need {MIN_TRIALS_FOR_IMPORTANCES} complete trials; "
                    f"the budget has {len(complete)}.")
        else:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            try:
                importances = optuna.importance.get_param_importances(view, evaluator=evaluator)
                ax = optuna.visualization.matplotlib.plot_param_importances(
                    view, evaluator=evaluator)
                _save(ax.figure, plots / IMPORTANCES_PNG)
            except (RuntimeError, ValueError) as error:  # e.g. no parameter varies
                importances, note = None, f"No parameter importances: {error}"
    return history, importances, note


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.set_size_inches(8, 5)
    figure.tight_layout()
    partial = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    figure.savefig(partial, dpi=110)
    os.replace(partial, path)
    plt.close(figure)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _markdown(study: optuna.Study, summary: dict[str, Any], trials: list[dict[str, Any]],
              history: str | None, importances: dict[str, float] | None, note: str) -> str:
    best = summary["best"]
    metric = summary["selection_metric"]
    states = collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))
    lines = [
        f"# Tuning report: study `{summary['study']}`", "",
        f"- storage: `{summary['storage']}`",
        f"- search space: `{summary['search_space']}`",
        f"- objective: validation `{metric}` of the best epoch (maximised); the test split "
        "was not read",
        f"- budget: {summary['budget']} finished trials; counted {summary['counted']} "
        f"(trials by state in the study: "
        f"{', '.join(f'{k.lower()} {v}' for k, v in sorted(states.items()))})", ""]
    if best is None:
        lines += ["No complete trial yet.", ""]
    else:
        lines += [
            "## Best trial", "",
            f"Trial {best['number']}: validation {metric} **{best['value']:.4f}** at epoch "
            f"{best['best_epoch']} (run `{best['run']}`).", "",
            "| parameter | value |", "|---|---|",
            *[f"| {k} | {_format(v)} |" for k, v in best["params"].items()], "",
            f"Config: `{BEST_CONFIG}`; train it with the full protocol (seeds, test split):",
            "", "```bash",
            f"python -m cardioformer_jax.main --config={summary['best_config']} "
            "--workdir=runs/tuned", "```", ""]
    lines += ["## Optimisation history", ""]
    lines += [f"![optimisation history]({history})", ""] if history else [
        "No complete trial to plot.", ""]
    lines += ["## Parameter importances (fANOVA)", ""]
    if importances:
        lines += ["| parameter | importance |", "|---|---|",
                  *[f"| {k} | {v:.3f} |" for k, v in importances.items()], "",
                  f"![parameter importances]({PLOTS}/{IMPORTANCES_PNG})", ""]
    else:
        lines += [note, ""]
    lines += ["## Trials of the budget", "",
              f"| trial | state | validation {metric} | epochs | run | parameters |",
              "|---|---|---|---|---|---|"]
    for t in trials:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        params = ", ".join(f"{k}={_format(v)}" for k, v in t["params"].items())
        retry = f" (retry of {t['retry_of']})" if t["retry_of"] is not None else ""
        lines.append(f"| {t['number']}{retry} | {t['state'].lower()} | {value} | "
                     f"{t['epochs_reported']} | {t['run']} | {params} |")
    return "\n".join(lines) + "\n"


def write_outputs(study: optuna.Study, counted: list[optuna.trial.FrozenTrial],
                  best: optuna.trial.FrozenTrial | None, base: ml_collections.ConfigDict,
                  space: search.SearchSpace, workdir: Path, *, url: str, search_path: Path,
                  budget: int) -> dict[str, Any]:
    """Writes the outputs (docs/tuning.md) of the trials `counted`; returns the summary."""
    metric = base.train.selection_metric
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": public_url(url),
        "search_space": os.fspath(search_path), "selection_metric": metric,
        "budget": budget, "counted": len(counted), "counted_trials": [t.number for t in counted],
        "best_config": None, "best": None}
    if best is not None:
        config = search.fixed_config(space, best.params, base)
        path = workdir / BEST_CONFIG
        header = (f"Best trial {best.number} of study {study.study_name!r}: validation "
                  f"{metric} {best.value:.4f}\n(written by cardioformer_jax.tune).\n\n"
                  f"    python -m cardioformer_jax.main --config={path} --workdir=RUN\n\n"
                  f"Tuned parameters: {best.params}\n")
        logging_utils.write_text_atomic(path, best_config_source(config, header))
        if load_config_file(path).to_dict() != config.to_dict():
            raise AssertionError(f"{path} does not reproduce the tuned config")
        summary["best_config"] = os.fspath(path)
        summary["best"] = _trial_summary(best)
    # An in-memory study of the budget's trials, for the plots and importances.
    view = optuna.create_study(study_name=study.study_name, direction="maximize")
    view.add_trials(counted)
    history, importances, note = _plots(view, workdir / PLOTS)
    summary["importances"] = importances
    logging_utils.write_json(workdir / BEST_TRIAL, summary)
    trials = [_trial_summary(t) for t in counted]
    logging_utils.write_text_atomic(
        workdir / REPORT, _markdown(study, summary, trials, history, importances, note))
    return summary
