"""Shared fixtures (a tiny random BERT, an isolated cache, the prepared course data) and the suite's shape: markers
by lesson, the slowest tests first, one torch thread per parallel worker."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import lecture_utils as lu

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LESSON_IN_ID = re.compile(r"(?<![0-9])([0-9]{2})_[a-z]")  # "09_compressing_llms" in a test's id
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in each pytest-xdist worker ("gw0", "gw1", ...)
# Seconds each slow module took per test on the idle 2-core machine (to start the longest first, so the workers
# finish together); a module not listed counts as a fast one.
SLOW_COST_S = {"test_grading.py": 60, "test_browser.py": 80, "test_student_copy.py": 25, "test_notebooks.py": 25}
# Modules whose tests share one costly module-scoped fixture (nbgrader's graded course, JupyterLab and Chromium, an
# executed notebook): a parallel run keeps each of them on one worker, so the fixture is built once.
SHARED_FIXTURE_MODULES = {"test_grading.py", "test_browser.py", "test_progress.py"}


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler for this suite: tests go one at a time to whichever worker is free (in collection
    order: the slowest first), except that a module of :data:`SHARED_FIXTURE_MODULES` goes whole to one worker.
    (xdist's own ``--dist loadgroup`` cannot do it under pytest 9: it renames ``item._nodeid``, which pytest 9 no
    longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedModulesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if Path(path).name in SHARED_FIXTURE_MODULES else nodeid

    return SharedModulesTogether(config, log)


def pytest_configure(config):
    for lesson in LESSONS:
        config.addinivalue_line("markers", f"lesson{lesson}: runs lesson {lesson}'s notebook (or its student copy)")
    if WORKER:  # several workers share the cores: one torch thread each, in this process and in the kernels it starts
        os.environ.setdefault(lu.config.THREADS_ENV, "1")
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Mark every test of one lesson's notebook ``lessonNN``; run the slow tests first, the costliest first (the
    same order in every worker, as pytest-xdist requires)."""
    for item in items:
        match = LESSON_IN_ID.search(item.nodeid.split("::", 1)[-1])
        if match and match.group(1) in LESSONS:
            item.add_marker(getattr(pytest.mark, f"lesson{match.group(1)}"))

    def cost(item) -> float:
        if item.get_closest_marker("slow") is None:
            return 0.0
        base = SLOW_COST_S.get(Path(str(item.fspath)).name, 10)
        match = LESSON_IN_ID.search(item.nodeid)
        return base * (2 if match and match.group(1) in ("03", "04", "05", "06", "08", "09", "10") else 1)

    items.sort(key=cost, reverse=True)  # stable: ties keep the collection order


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """A test that called ``lu.setup()`` may leave torch on more threads: back to one in a parallel worker."""
    yield
    if WORKER and torch.get_num_threads() != 1:
        torch.set_num_threads(1)

# property-based tests: no per-example time limit (a busy machine is slow, not wrong), and few enough examples to
# keep each test at seconds
settings.register_profile("course", deadline=None, max_examples=40)
settings.load_profile("course")


@pytest.fixture
def tiny_bert():
    """A randomly initialised 2-layer BERT classifier (vocabulary 100, hidden 16, 4 heads), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def bert4():
    """A randomly initialised 4-layer BERT classifier (vocabulary 100, hidden 16, 4 heads), eager attention (so it
    can return its attention weights), in eval mode: enough layers to keep, drop and map."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """Point the course cache at an empty temporary folder."""
    monkeypatch.setenv(lu.config.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def prepared():
    """The real Rotten Tomatoes splits (fetched and verified once; idempotent)."""
    return lu.data.prepare_sentiment()


@pytest.fixture
def tiny_distilbert():
    """A randomly initialised 2-layer DistilBERT classifier (another family: `transformer`, `pre_classifier`)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=100, dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=64)
    return DistilBertForSequenceClassification(cfg).eval()


@pytest.fixture
def tiny_electra():
    """A randomly initialised 2-layer ELECTRA classifier whose embeddings (8) are narrower than its hidden size
    (16), so it has an `embeddings_project` Linear between them."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(0)
    cfg = ElectraConfig(vocab_size=100, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2)
    return ElectraForSequenceClassification(cfg).eval()


@pytest.fixture
def hang_guard():
    """``with hang_guard(seconds):`` fails the test with TimeoutError instead of hanging (SIGALRM, main thread; on
    a system without SIGALRM, such as Windows, the block simply runs)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard(seconds: int = 60):
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def fail(*_):
            raise TimeoutError(f"still running after {seconds} s: this call hangs")

        old = signal.signal(signal.SIGALRM, fail)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    return guard


# What a notebook has recorded (lu.record) when a prediction exercise's check runs: the measurement it compares with.
# Values of one laptop-scale run; the checks that read them are tested against these.
MEASURED = {"size.minilm.linear_weights": 10_765_056, "size.minilm.other_params": 11_948_930,
            "size.minilm.int8_linear_mb": 58.631445, "distill.teacher.embedding_share": 0.5247,
            "distill.student3.kept_fraction": 0.5, "distill.student3.size_ratio": 1.3056,
            "llm.config.num_hidden_layers": 30, "llm.config.num_attention_heads": 9,
            "llm.config.num_key_value_heads": 3, "llm.config.hidden_size": 576, "llm.config.head_dim": 64,
            "llm.kv_cache.batch": 4, "llm.kv_cache.tokens": 128, "llm.kv_cache.bytes_per_number": 4,
            "llm.kv_cache.batch_bytes": 23_592_960, "quant.roundtrip.mse_b8": 2.598e-06,
            "quant.roundtrip.mse_b6": 4.266e-05, "quant.roundtrip.mse_b4": 7.503e-04,
            "quant.roundtrip.mse_b3": 3.286e-03, "quant.roundtrip.mse_b2": 8.138e-03, "lowrank.teacher.layers": 6,
            "lowrank.teacher.hidden": 384, "lowrank.teacher.intermediate": 1536,
            "lowrank.64.encoder_linear_weights": 2_654_208, "lowrank.128.encoder_linear_weights": 5_308_416,
            "lowrank.192.encoder_linear_weights": 7_962_624, "prune.csr_whole.pruned_share": 0.4672,
            "prune.csr_whole.sparsity": 0.9, "prune.csr_whole.size_ratio": 1.5945}


@pytest.fixture
def measured(monkeypatch):
    """This kernel's recorded results replaced by :data:`MEASURED` (restored after the test)."""
    monkeypatch.setattr(lu.results, "_recorded", dict(MEASURED))
    return dict(MEASURED)


# Small random causal language models of other families, for the lu.llm helpers: each either gives a verified result
# on them or one clear refusal. Built from transformers configs (no download); norms get random weights so that a
# (1 + weight) norm (Gemma) behaves differently from a weight norm (Llama).
LM_FAMILIES = ("llama", "llama_mha", "qwen2", "qwen2_sliding", "mistral", "phi3", "gemma", "gemma2", "gpt2", "opt")
LLAMA_STYLE = ("llama", "llama_mha", "qwen2", "qwen2_sliding", "mistral", "phi3", "gemma", "gemma2")  # model.layers
SLIDING_WINDOW = 8  # tokens; shorter than the test windows, so sliding-window attention matters


def make_tiny_lm(family: str) -> torch.nn.Module:
    """A 2-layer random ``*ForCausalLM`` of ``family`` (vocabulary 96, hidden 32, 4 heads, 64 positions), eval mode.
    llama: grouped-query attention (2 key/value heads); llama_mha: 4; qwen2_sliding: its second layer slides;
    mistral: every layer slides; gemma2: sliding and full layers alternate, with extra norms; phi3: fused q/k/v
    and gate/up; gpt2: Conv1D layers in transformer.h; opt: model.decoder.layers."""
    import transformers as T

    torch.manual_seed(0)
    common = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64)
    built = {
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**common, num_key_value_heads=2, head_dim=8)),
        "llama_mha": lambda: T.LlamaForCausalLM(T.LlamaConfig(**common, num_key_value_heads=4,
                                                              tie_word_embeddings=False)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**common, num_key_value_heads=2)),
        "qwen2_sliding": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**common, num_key_value_heads=2,
                                                                  use_sliding_window=True,
                                                                  sliding_window=SLIDING_WINDOW, max_window_layers=1)),
        "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**common, num_key_value_heads=2,
                                                                sliding_window=SLIDING_WINDOW)),
        "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(**common, num_key_value_heads=2, pad_token_id=0,
                                                       bos_token_id=1, eos_token_id=2)),
        "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**common, num_key_value_heads=2, head_dim=8)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**common, num_key_value_heads=2, head_dim=8,
                                                             sliding_window=SLIDING_WINDOW)),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                       bos_token_id=1, eos_token_id=2)),
        "opt": lambda: T.OPTForCausalLM(T.OPTConfig(vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                                    num_attention_heads=4, max_position_embeddings=64,
                                                    word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1,
                                                    eos_token_id=2)),
    }
    model = built[family]().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session", params=LM_FAMILIES)
def tiny_lm(request) -> tuple[str, torch.nn.Module]:
    """``(family, model)`` for every family of :data:`LM_FAMILIES` (built once; deep-copy before changing it)."""
    return request.param, make_tiny_lm(request.param)
