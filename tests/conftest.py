"""Shared fixtures: a tiny random BERT (fast, no download), an isolated cache, the prepared course data."""

from __future__ import annotations

import pytest
import torch

import lecture_utils as lu


@pytest.fixture
def tiny_bert():
    """A randomly initialised 2-layer BERT classifier (vocabulary 100, hidden 16, 4 heads), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2)
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
