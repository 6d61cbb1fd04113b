"""Which network a config trains: ``config.model_name`` -> an NNX module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from cardioformer_jax.models.cardioformer import Cardioformer, CardioformerConfig
from cardioformer_jax.models.resnet1d import ResNet1D, ResNet1DConfig

MODEL_NAMES: tuple[str, ...] = ("cardioformer", "resnet1d")

NetworkConfig = CardioformerConfig | ResNet1DConfig


def model_name(config: Mapping[str, Any]) -> str:
    """``config.model_name``, checked."""
    name = config["model_name"]
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model_name {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def input_sizes(config: Mapping[str, Any]) -> dict[str, int]:
    """The input sizes every network reads from outside its section (`config_lib.INPUT_SIZES`)."""
    return {"seq_len": int(config["input"]["seq_len"]),
            "num_channels": int(config["input"]["num_channels"]),
            "num_classes": int(config["dataset"]["num_classes"])}


def network_config(config: Mapping[str, Any]) -> NetworkConfig:
    """The validated, hashable hyper-parameters of the config's model (keys the programs)."""
    name = model_name(config)
    if name == "cardioformer":
        return CardioformerConfig.from_config({**config["model"], **input_sizes(config)})
    return ResNet1DConfig.from_config({
        **config["resnet"], **input_sizes(config), "tabular": config["model"]["tabular"]})


def build_model(spec: NetworkConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """The module of a `network_config` (train mode)."""
    if isinstance(spec, ResNet1DConfig):
        return ResNet1D(spec, rngs=rngs)
    if isinstance(spec, CardioformerConfig):
        return Cardioformer(spec, rngs=rngs)
    raise TypeError(f"not a model spec: {type(spec).__name__}")


def count_params(model: nnx.Module | nnx.State) -> int:
    """Trainable scalars: of a module's (or abstract module's) `nnx.Param`s or of a state."""
    params = nnx.state(model, nnx.Param) if isinstance(model, nnx.Module) else model
    return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
