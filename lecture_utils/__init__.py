"""Helpers for the course "Compressing Neural Networks". Notebooks do ``import lecture_utils as lu``.

One small module per job: ``config`` (scales), ``env`` (set-up), ``data``, ``models``, ``training``, ``measure``,
``memory``, ``stats`` (is a difference in accuracy real?), ``overparam`` (lesson 02), ``distill`` (03),
``surgery`` (keeping and dropping layers), ``prune`` (04), ``heads`` (05: head gates, importance and removal),
``quantize`` (06), ``lottery`` (07), ``lowrank`` and ``combine`` (08), ``runtime`` (06, 08: ONNX export and ONNX
Runtime on the CPU), ``llm`` (09: compressing a generative language model), ``plots``, ``widgets``, ``checks``
(exercise checks), ``results`` (``record``), ``release`` (student copies) and ``runner`` (executing the course).
"""

from .config import configure_openmp

configure_openmp()  # before torch is imported (by .env below): OpenMP reads its wait policy once, at load

from .env import configure_offline, quiet_library_logs  # noqa: E402

configure_offline()  # before transformers/datasets are imported anywhere: they read these variables once
quiet_library_logs()

from . import (  # noqa: E402
    checks,
    combine,
    config,
    data,
    distill,
    env,
    heads,
    llm,
    lottery,
    lowrank,
    measure,
    memory,
    models,
    overparam,
    plots,
    prune,
    quantize,
    release,
    results,
    runtime,
    stats,
    surgery,
    training,
    widgets,
)
from .config import get_scale  # noqa: E402
from .env import doctor, get_device, seed_everything, setup  # noqa: E402
from .results import record  # noqa: E402

__version__ = "0.1.0"
__all__ = ["checks", "combine", "config", "data", "distill", "env", "heads", "llm", "lottery", "lowrank", "measure",
           "memory", "models", "overparam", "plots", "prune", "quantize", "release", "results", "runtime", "stats",
           "surgery", "training", "widgets",
           "get_scale", "doctor", "get_device", "seed_everything", "setup", "record"]
