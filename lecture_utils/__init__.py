"""Helpers for the course "Compressing Neural Networks". Notebooks do ``import lecture_utils as lu``.

One small module per job: ``config`` (scales), ``env`` (set-up), ``fetch`` (wheels from PyPI), ``hardware`` (CPU
features, memory bandwidth), ``data``, ``models``, ``training``, ``measure``, ``memory``, ``overparam`` (lesson 02),
``distill`` (03), ``surgery`` (keeping and dropping layers), ``prune`` (04), ``heads`` (05: head gates, importance
and removal), ``quantize`` (06), ``lottery`` (07), ``lowrank`` and ``combine`` (08), ``runtime`` (06, 08: ONNX
export and ONNX Runtime on the CPU), ``llm`` (09, 10: compressing and running a generative language model),
``stats`` (is a difference in accuracy real?), ``plots``, ``widgets``, ``checks`` (exercises, one module per
lesson), ``results`` (``record``) and ``keys`` (what each lesson records), ``release`` (student copies) and
``runner`` (executing the course).

Layers: a module imports only from layers below its own (tests/test_structure.py keeps it so; the few imports
within one layer that it allows are listed there with their reason).

0. ``config``: every environment variable's name and the scales
1. ``validate``, ``progress``, ``results``, ``keys`` (every recorded key, declared once), ``env``
2. ``fetch`` (wheels from PyPI, their digests), ``hardware`` (what the CPU and memory can do)
3. ``data``, ``models``, ``training``, ``measure``, ``memory``, ``stats``
4. techniques: ``overparam``, ``distill``, ``surgery``, ``prune``, ``heads``, ``quantize``, ``lottery``,
   ``lowrank``, ``combine``, ``runtime``, ``llm``
5. ``plots``, ``widgets``
6. ``checks``, ``release``, ``runner``
7. entry points: ``__main__`` (the command line) and this package (``lu.doctor`` adds the rows of layer 3 to
   ``env.doctor``'s)
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
    fetch,
    hardware,
    heads,
    keys,
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
    results,
    runtime,
    stats,
    surgery,
    training,
    widgets,
)
from .config import get_scale  # noqa: E402
from .env import get_device, seed_everything, setup  # noqa: E402
from .results import record  # noqa: E402

__version__ = "0.1.0"


def doctor() -> list[tuple[str, bool, str]]:
    """Check everything the course needs and say how to fix what is missing: :func:`env.doctor`'s rows plus the
    pretrained model's and the data's (set-up sits below models and data, so the rows for those are added here).

    Returns a list of ``(check, ok, detail)`` rows and prints them; a failing row's detail is the fix to run.
    """
    def splits() -> str:
        return f"{data.sentiment_manifest()['counts']} in {data.sentiment_dir()}"

    return env.doctor(probes=[("pretrained MiniLM-L6 (offline)", lambda: str(models.pretrained_path())),
                              ("Rotten Tomatoes splits", splits)])
__all__ = ["checks", "combine", "config", "data", "distill", "env", "fetch", "hardware", "heads", "keys", "llm",
           "lottery", "lowrank", "measure", "memory", "models", "overparam", "plots", "prune", "quantize", "release",
           "results", "runtime", "stats", "surgery", "training", "widgets",
           "get_scale", "doctor", "get_device", "seed_everything", "setup", "record"]


def __getattr__(name: str):
    """``lu.release`` on first use: it needs nbformat, whose schema checker takes seconds to import, and a lesson's
    kernel never writes a release (``from lecture_utils import release`` works as usual)."""
    if name == "release":
        import importlib

        return importlib.import_module(f"{__name__}.release")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
