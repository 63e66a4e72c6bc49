"""Shared helpers for the MBT tests: random parameters without XLA's RNG, fast-compiling jit.

The models here are tiny, so XLA's compile time dominates the tests; building parameters with numpy
(instead of model.init's RNG program) and compiling without LLVM's expensive passes keeps the suite short.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mbt.config import ModelConfig
from mbt.model import param_shapes

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _random_variables(config: ModelConfig, seed: int = 0, scale: float = 0.1) -> dict:
    """Variables of `config`'s model filled from numpy: N(0, scale), LayerNorm scales around 1."""
    rs = np.random.RandomState(seed)

    def fill(path, s):
        name = getattr(path[-1], "key", "")
        value = rs.normal(0.0, scale, s.shape)
        return (1.0 + value if name == "scale" else value).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, param_shapes(config))


def _random_inputs(config: ModelConfig, batch_size: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    rs = np.random.RandomState(seed)
    return {m: rs.normal(size=s).astype(np.float32) for m, s in config.input_shapes(batch_size).items()}


def _jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


@pytest.fixture
def random_variables():
    return _random_variables


@pytest.fixture
def random_inputs():
    return _random_inputs


@pytest.fixture
def fast_jit():
    return _jit
