import os
import random

import numpy as np
import pytest
import torch

import lecture_utils as lu


def test_seed_everything_repeats_python_numpy_and_torch():
    lu.seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(3))
    lu.seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_seed_must_be_non_negative_int():
    with pytest.raises(ValueError):
        lu.seed_everything(-1)


def test_get_device_falls_back_to_cpu_and_explains_unavailable():
    dev = lu.get_device()
    assert dev.type in ("cuda", "mps", "cpu")
    assert lu.get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="Available: "):
            lu.get_device("cuda")


def test_setup_returns_facts_and_sets_threads(capsys):
    info = lu.setup(seed=3, scale="smoke", threads=1)
    assert info.scale.name == "smoke" and info.threads == 1 and torch.get_num_threads() == 1
    assert info.offline is True and all(os.environ[v] == "1" for v in lu.config.HF_OFFLINE_ENVS)
    line = capsys.readouterr().out
    assert "scale=smoke" in line and "torch" in line and line.count("\n") == 1
    lu.setup(scale="smoke", quiet=True)


def test_setup_rejects_bad_scale_and_threads():
    with pytest.raises(ValueError, match="Allowed"):
        lu.setup(scale="medium")
    with pytest.raises(ValueError, match="threads"):
        lu.setup(scale="smoke", threads=0, quiet=True)


def test_hub_check_never_hangs():
    import time

    start = time.perf_counter()
    lu.env.hub_reachable(timeout_s=0.5)
    assert time.perf_counter() - start < 60  # a hang guard, not a timing: the timeout was 0.5 s


def test_doctor_reports_rows(capsys, prepared):
    rows = lu.doctor()
    names = [r[0] for r in rows]
    assert "pretrained MiniLM-L6 (offline)" in names and "Rotten Tomatoes splits" in names
    assert all(ok for _, ok, _ in rows), rows


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with lu.env.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive int"):
        with lu.env.torch_threads(0):
            pass


def test_busy_cores_reads_the_machine_load_of_the_moment(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 ...\n")
    assert lu.env.busy_cores(0.01, stat) is None  # no time passed in the file: unknown, not 0
    assert lu.env.busy_cores(0.01, tmp_path / "missing") is None
    real = lu.env.busy_cores(0.05)
    assert real is None or 0 <= real <= os.cpu_count() + 0.01
    with pytest.raises(ValueError, match="window_s"):
        lu.env.busy_cores(0)


def test_thread_policy_leaves_busy_cores_to_other_work():
    assert lu.env.choose_threads(2, None) == 2 and lu.env.choose_threads(2, 0.0) == 2
    assert lu.env.choose_threads(2, 1.0) == 1 and lu.env.choose_threads(2, 5.0) == 1
    assert lu.env.choose_threads(16, 4.0) == 12
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="cores"):
            lu.env.choose_threads(bad, 0.0)
    with pytest.raises(ValueError, match="busy"):
        lu.env.choose_threads(2, float("nan"))


def test_setup_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv(lu.config.THREADS_ENV, "1")
    assert lu.setup(scale="smoke", quiet=True).threads == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(lu.config.THREADS_ENV, "two")
    with pytest.raises(ValueError, match=f"{lu.config.THREADS_ENV}.*'two'"):
        lu.setup(scale="smoke", quiet=True)
    monkeypatch.delenv(lu.config.THREADS_ENV)
    info = lu.setup(scale="smoke", quiet=True)
    assert 1 <= info.threads <= lu.env.usable_cores()


def test_openmp_threads_sleep_when_idle_unless_the_user_chose_otherwise():
    import subprocess
    import sys

    wait = lu.config.OMP_WAIT_ENV
    code = f"import lecture_utils, os; print(os.environ['{wait}'])"
    env = {k: v for k, v in os.environ.items() if k != wait}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, wait: "ACTIVE"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ACTIVE"
    assert lu.setup(scale="smoke", quiet=True).omp_wait_policy == os.environ.get(wait)


def test_headless_setup_turns_the_hugging_face_bars_off(monkeypatch):
    """A headless run must open no widget: the libraries' own bars (e.g. "Writing model shards" when a model is
    saved) would be live widgets in the kernel."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    from lecture_utils import config, env

    monkeypatch.delenv(config.HF_HUB_BARS_OFF_ENV, raising=False)
    monkeypatch.delenv(config.NBGRADER_ENV, raising=False)
    monkeypatch.setenv(config.HEADLESS_ENV, "1")
    threads = torch.get_num_threads()
    try:
        env.setup(quiet=True, threads=threads)
        assert are_progress_bars_disabled() and not hf_logging.is_progress_bar_enabled()
    finally:
        monkeypatch.delenv(config.HF_HUB_BARS_OFF_ENV, raising=False)  # set by setup; it would veto re-enabling
        enable_progress_bars()
        hf_logging.enable_progress_bar()


def test_quiet_transformers_leaves_the_bars_as_it_found_them():
    from transformers.utils import logging as hf_logging

    from lecture_utils import models

    hf_logging.disable_progress_bar()
    try:
        with models.quiet_transformers():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # a headless run's bars stay off
    finally:
        hf_logging.enable_progress_bar()
    with models.quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
