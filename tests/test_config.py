import pytest

import lecture_utils as lu
from lecture_utils.config import SCALE_ENV, SCALES, cache_dir, get_scale, scale_table


def test_default_scale_is_laptop(monkeypatch):
    monkeypatch.delenv(SCALE_ENV, raising=False)
    assert get_scale().name == "laptop"


def test_scale_from_environment_and_argument(monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "smoke")
    assert get_scale().name == "smoke"
    assert get_scale("FULL").name == "full"


def test_unknown_scale_says_what_is_allowed():
    with pytest.raises(ValueError) as err:
        get_scale("huge")
    msg = str(err.value)
    assert "huge" in msg and all(name in msg for name in SCALES) and SCALE_ENV in msg


def test_scales_grow_from_smoke_to_laptop():
    smoke, laptop = SCALES["smoke"], SCALES["laptop"]
    assert smoke.train_examples < laptop.train_examples
    assert smoke.finetune_steps < laptop.finetune_steps
    assert smoke.model == laptop.model == "minilm"  # smoke runs the same model and code paths on less data
    assert {row["name"] for row in scale_table()} == set(SCALES)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(lu.config.CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()


def test_atomic_folder_replaces_only_on_success(tmp_path):
    from lecture_utils.config import atomic_folder

    target = tmp_path / "thing"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]  # no temporary folder left behind
    with atomic_folder(target) as tmp:  # a successful replacement: the new folder, no old one left aside
        (tmp / "b.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from lecture_utils import config

    path = tmp_path / "f.json"
    config.atomic_write(path, "v1")
    path.chmod(0o640)
    config.atomic_write(path, b"v2")
    assert path.read_bytes() == b"v2" and path.stat().st_mode & 0o777 == 0o640  # the file's mode is kept

    def fail(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(config.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        config.atomic_write(path, "v3")
    assert path.read_bytes() == b"v2" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    with pytest.raises(IsADirectoryError, match="folder"):
        config.atomic_write(tmp_path, "x")


def test_bad_scale_names_and_a_cache_that_is_a_file_are_explained(tmp_path, monkeypatch):
    from lecture_utils import config, env

    with pytest.raises(TypeError, match="scale must be one of"):
        config.get_scale(123)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match="is a file"):
        config.cache_dir()
    with pytest.raises(ValueError, match="2\\*\\*32"):
        env.seed_everything(2**40)


def test_cache_lock_makes_a_second_builder_wait_for_the_first(tmp_path):
    """Two builders of one cache entry (two notebooks, two test workers): the second enters only after the first
    left, so it finds the entry complete instead of building it again or replacing it under a reader."""
    import threading
    import time

    from lecture_utils.config import cache_lock

    target, events = tmp_path / "entry", []

    def builder(name: str, hold_s: float) -> None:
        with cache_lock(target):
            events.append(f"{name} in")
            time.sleep(hold_s)
            events.append(f"{name} out")

    first = threading.Thread(target=builder, args=("first", 0.5))
    first.start()
    while not events:
        time.sleep(0.01)
    second = threading.Thread(target=builder, args=("second", 0))
    second.start()
    first.join(30)
    second.join(30)
    assert events == ["first in", "first out", "second in", "second out"]
    assert (tmp_path / ".entry.lock").exists() and not target.exists()  # the lock builds nothing itself
