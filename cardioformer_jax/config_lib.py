"""Shared pieces of the `configs/*.py` files (docs/model.md, docs/training.md)."""

from __future__ import annotations

import copy
import dataclasses
import numbers
import re
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app

from cardioformer_jax import models
from cardioformer_jax.core import tasks
from cardioformer_jax.data import windows
from cardioformer_jax.models import resnet1d
from cardioformer_jax.models.cardioformer import CardioformerConfig, parse_patch_lens

PATCH_LENS_16 = (2, 4, 8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32)
PATCH_LENS_12 = (2, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32)


# The input sizes of the network (`CardioformerConfig` and `ResNet1DConfig` fields) are config
# fields outside its section: what the data gives it, the same for every network. Keys of
# configs written before they moved out of `model` (`with_defaults` migrates those).
INPUT_SIZES: dict[str, str] = {"seq_len": "input.seq_len",
                               "num_channels": "input.num_channels",
                               "num_classes": "dataset.num_classes"}
MOVED_FIELDS: dict[str, str] = {f"model.{name}": field for name, field in INPUT_SIZES.items()}


def model_section(**overrides) -> ml_collections.ConfigDict:
    """The `model` section: `CardioformerConfig`'s fields but `INPUT_SIZES`, paper defaults,
    then `overrides`; augmentations a string, for command-line overrides."""
    moved = sorted(set(overrides) & set(INPUT_SIZES))
    if moved:
        raise ValueError(f"{', '.join(moved)} are not model fields; set "
                         f"{', '.join(f'config.{INPUT_SIZES[n]}' for n in moved)}")
    values = {f.name: f.default for f in dataclasses.fields(CardioformerConfig)
              if f.name not in INPUT_SIZES}
    values["augmentations"] = "jitter0.2,scale0.2,drop0.5"
    values.update(overrides)
    # Fail early on a bad value; the patch lengths meet `input.seq_len` in `validate_config`.
    longest = max(parse_patch_lens(values["patch_lens"]), default=CardioformerConfig.seq_len)
    CardioformerConfig.from_config({**values, "seq_len": max(CardioformerConfig.seq_len, longest)})
    return ml_collections.ConfigDict(values)


# What a resumed run may do with a field (`Field.resume`, `training.checkpointing`):
FREE = "may change"  # it changes how the run runs or reports, not what it computes
ALLOW = "if allowed"  # it changes what the run computes: --allow_config_change=FIELD
NEVER = "never"  # the checkpoint would not fit (other shapes, data or data order)


@dataclasses.dataclass(frozen=True)
class Field:
    """A config field outside the model sections: its default (and type), the values it
    accepts (`choices`, or a `bound` but `also`), its `resume` rule and a line of doc."""

    default: Any
    doc: str
    bound: str = ""  # "<op> <number>", op one of >=, >
    also: tuple[Any, ...] = ()
    choices: tuple[Any, ...] = ()
    resume: str = ALLOW

    def accepts(self) -> str:
        """The values it accepts, in words: "-1 or >= 1", "'stop', 'skip'", "int"."""
        if self.choices:
            return ", ".join(map(repr, self.choices))
        if self.bound:
            return " or ".join([*map(repr, self.also), self.bound])
        return type(self.default).__name__

    def problem(self, name: str, value: Any) -> str | None:
        """Why `value` is not a value of this field (None when it is)."""
        kind = type(self.default)
        accepted = {int: numbers.Integral, float: numbers.Real, tuple: (tuple, list)}
        if not isinstance(value, accepted.get(kind, kind)) or (
                isinstance(value, bool) and kind is not bool):
            return f"{name}={value!r} must be of type {kind.__name__}"
        if value in self.also:
            return None
        if self.choices and value not in self.choices:
            return f"{name}={value!r} must be one of {self.choices}"
        if self.bound:
            op, limit = self.bound.split()
            if not (value >= float(limit) if op == ">=" else value > float(limit)):
                return f"{name}={value!r} must be {self.accepts()}"
        return None


# Every field of a config except the `model` and `resnet` sections (`CardioformerConfig`,
# `ResNet1DConfig` but their input sizes, `INPUT_SIZES`); `base_config`, `validate_config`,
# the resume rules and the table in docs/training.md (`fields_table`) are made from it.
FIELDS: dict[str, Field] = {
    "seed": Field(41, "first seed: model init, dropout stream, data order", resume=NEVER),
    "seeds": Field(1, "> 1: seeds `seed`, `seed + 1`, ... in `workdir/seed_<s>`, aggregated "
                   "(5 for the paper)", ">= 1", resume=FREE),
    "dataset.name": Field("", "the built dataset (and split rule, docs/data.md)", resume=NEVER),
    "dataset.builder_config": Field("", "\"\": the builder's default config", resume=NEVER),
    "dataset.num_classes": Field(5, "the classes of the label space: the network's outputs",
                                 ">= 2", resume=NEVER),
    "dataset.multilabel": Field(False, "True: a sigmoid per class on the multi-hot `labels`; "
                                "False: softmax on the single `label`"),
    "dataset.leads": Field("", "\"\": every lead; \"12\", \"6\", \"4\", \"3\", \"2\": a "
                           "Challenge 2021 lead set (`dataset_inputs.LEAD_SETS`)"),
    "dataset.data_dir": Field("~/tensorflow_datasets", "the built datasets (`~`, `$VAR` "
                              "expanded; not in a `gs://` URL)"),
    "dataset.synthetic_patients": Field(0, "> 0: build a synthetic PTB-XL twin of this many "
                                        "patients in `<workdir>/data`, ignoring `data_dir` "
                                        "(the demo)", ">= 0", resume=NEVER),
    "dataset.num_workers": Field(0, "Grain worker processes (0: threads only)", ">= 0"),
    "dataset.num_threads": Field(2, "read threads per process", ">= 1", resume=FREE),
    "dataset.prefetch_batches": Field(4, "batches buffered per process", ">= 0", resume=FREE),
    "input.seq_len": Field(250, "samples per input of the network (a record, or a crop)",
                           ">= 1", resume=NEVER),
    "input.num_channels": Field(12, "leads per input of the network (those `dataset.leads` "
                                "keeps)", ">= 1", resume=NEVER),
    "input.crop_seconds": Field(0.0, "> 0: the input (`input.seq_len` samples) is a random "
                                "crop this long of a record (`data.windows`)", resume=NEVER),
    "input.eval_stride_seconds": Field(0.0, "crops: evaluation windows at this stride"),
    "input.eval_aggregation": Field("max", "crops: how a record's window probabilities "
                                    "combine", choices=windows.AGGREGATIONS),
    "model_name": Field("cardioformer", "`resnet1d`: the baseline, from `resnet` (and "
                        "`input`, `dataset.num_classes`)", choices=models.MODEL_NAMES,
                        resume=NEVER),
    "train.batch_size": Field(128, "global training batch (all devices)", ">= 1",
                              resume=NEVER),
    "train.eval_batch_size": Field(256, "global evaluation batch (no effect on metrics)",
                                   ">= 1", resume=FREE),
    "train.num_epochs": Field(100, "maximum epochs", ">= 1", resume=FREE),
    "train.steps_per_epoch": Field(-1, "-1: one pass over the training split", ">= 1",
                                   also=(-1,)),
    "train.learning_rate": Field(1e-4, "Adam, no weight decay or schedule", "> 0"),
    "train.grad_clip_norm": Field(4.0, "clipping at this global norm; <= 0: none"),
    "train.patience": Field(10, "early stopping: epochs without improvement", ">= 1"),
    "train.selection_metric": Field(
        "f1", "the validation metric of early stopping and the best epoch (macro F1 and "
        "AUROC; `accuracy` single-label, `fmax` multi-label only)",
        choices=("f1", "auroc", "accuracy", "fmax")),
    "train.min_delta": Field(1e-5, "early stopping: the smallest improvement", ">= 0"),
    "train.log_every_steps": Field(50, "logging only", ">= 1", resume=FREE),
    "train.checkpoint_every_steps": Field(500, "also one at every epoch end", ">= 1",
                                          resume=FREE),
    "train.keep_checkpoints": Field(2, "the latest kept, and the best epoch's", ">= 1",
                                    resume=FREE),
    "train.async_checkpointing": Field(True, "write in a background thread", resume=FREE),
    "train.nan_policy": Field("stop", "non-finite loss or gradients: `stop` fails naming the "
                              "step, `skip` drops the update", choices=("stop", "skip")),
    "train.vectorize_seeds": Field(True, "seeds > 1: train them in one vectorised program "
                                   "(False: one after another)", resume=FREE),
    "mesh.shape": Field((-1, 1), "device mesh (`sharding.create_mesh`); -1: the rest"),
    "mesh.axis_names": Field(("data", "fsdp"), "the batch is split over both, the large "
                             "weights over `fsdp`"),
}


def resume_fields(rule: str) -> tuple[str, ...]:
    """The fields whose `Field.resume` is `rule`; of the model sections `SHAPE_FIELDS` and
    `resnet` are `NEVER`, the rest `ALLOW`."""
    names = tuple(name for name, field in FIELDS.items() if field.resume == rule)
    if rule == NEVER:
        names += tuple(f"model.{name}" for name in CardioformerConfig.SHAPE_FIELDS
                       if name not in INPUT_SIZES) + ("resnet",)
    return names


def fields_table() -> str:
    """`FIELDS` as the Markdown table of docs/training.md."""
    return "\n".join([
        "| field | default | accepts | on resume | meaning |", "|---|---|---|---|---|",
        *(f"| `{name}` | `{field.default!r}` | {field.accepts()} | {field.resume} | {field.doc} |"
          for name, field in FIELDS.items())])


def base_config() -> ml_collections.ConfigDict:
    """Dataset-independent defaults: every field a run can use (`validate_config` rejects
    any other key, so a misspelt override fails)."""
    values: dict[str, Any] = {"model": model_section(), "resnet": resnet1d.default_section()}
    for name, field in FIELDS.items():
        *section, key = name.split(".")  # FIELDS are at most one section deep
        (values.setdefault(section[0], {}) if section else values)[key] = field.default
    return ml_collections.ConfigDict(values)


def _schema_problems(config: Any, schema: Any, prefix: str) -> list[str]:
    problems = []
    for key in config.keys():
        name = f"{prefix}{key}"
        if name in MOVED_FIELDS:
            problems.append(f"config key {name!r} is now {MOVED_FIELDS[name]!r}")
        elif key not in schema:
            problems.append(f"unknown config key {name!r} (known under "
                            f"{prefix[:-1] or 'config'}: {sorted(schema.keys())})")
        elif isinstance(schema[key], ml_collections.ConfigDict):
            if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
                problems.append(f"config key {name!r} must be a section, got {config[key]!r}")
            else:
                problems.extend(_schema_problems(config[key], schema[key], f"{name}."))
    return problems


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved ``config.json`` dict with `MOVED_FIELDS` at their places now."""
    saved = copy.deepcopy(dict(saved))
    model = saved.get("model")
    if not isinstance(model, dict):
        return saved
    for key, new in INPUT_SIZES.items():
        if key not in model:
            continue
        value = model.pop(key)
        section, name = new.split(".")
        target = saved.setdefault(section, {})
        if name in target and target[name] != value:
            raise ValueError(f"the saved config has model.{key}={value!r} and {new}="
                             f"{target[name]!r}; model.{key} is {new} now")
        target[name] = value
    return saved


def with_defaults(saved: dict[str, Any]) -> ml_collections.ConfigDict:
    """A saved config (``config.json``), `migrate`d, with the defaults of keys added since,
    so runs of earlier versions still load."""
    config = base_config()
    config.update(ml_collections.ConfigDict(migrate(saved)))
    return config


def moved_override_problems(argv: Sequence[str]) -> list[str]:
    """Problems of the overrides in `argv` naming a field where it was (`MOVED_FIELDS`)."""
    matches = (re.match(r"^--?(\w+)\.([\w.]+)(=|$)", arg) for arg in argv)
    return [f"--{m[1]}.{m[2]} is now --{m[1]}.{MOVED_FIELDS[m[2]]} (the input sizes are "
            f"outside the network's section)" for m in matches if m and m[2] in MOVED_FIELDS]


def parse_flags(argv: list[str]) -> list[str]:
    """`absl.app.run`'s flag parser for ``--config`` commands: a moved field's override
    fails saying where it went, not with a bare ``AttributeError``."""
    problems = moved_override_problems(argv[1:])
    if problems:
        print("FATAL Flags parsing error: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)
    return app.parse_flags_with_usage(argv)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for keys `base_config()` (every config's schema) lacks or bad values."""
    # The lead sets live with the input contracts (imported here: it reads WFDB).
    from cardioformer_jax.data.dataset_inputs import LEAD_SETS

    problems = _schema_problems(config, base_config(), "")
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    CardioformerConfig.from_config({**config.model, **models.input_sizes(config)})
    models.network_config(config)  # model_name and, for the baseline, the resnet section
    problems = [problem for name, field in FIELDS.items()
                if (problem := field.problem(name, config[name]))]
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    dataset, metric = config.dataset, config.train.selection_metric
    task = tasks.from_config(config)
    metrics = task.selection_metrics
    checks = [
        (bool(dataset.name), "dataset.name is empty; use one of configs/*.py"),
        (metric in metrics, f"train.selection_metric={metric!r} must be one of {metrics} for "
                            f"{task.name} training"),
        (dataset.leads in ("", *LEAD_SETS),
         f"dataset.leads={dataset.leads!r} must be '' (every lead) or one of the "
         f"Challenge 2021 lead sets {tuple(LEAD_SETS)}"),
        (dataset.leads not in LEAD_SETS or config.input.num_channels == int(dataset.leads),
         f"dataset.leads={dataset.leads!r} keeps {dataset.leads} leads but "
         f"input.num_channels={config.input.num_channels}"),
        (len(config.mesh.shape) == len(config.mesh.axis_names),
         f"mesh.shape={tuple(config.mesh.shape)} and mesh.axis_names="
         f"{tuple(config.mesh.axis_names)} differ in length"),
    ]
    problems = [message for ok, message in checks if not ok]
    problems += windows.config_problems(config)
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
