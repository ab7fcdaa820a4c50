from pathlib import Path

import lecture_utils as lu


def test_fit_table_is_the_plain_fallback_of_the_widget(capsys):
    rows = lu.widgets.fit_table({"small": 1e8, "7B": 7e9}, {"phone": 8, "big GPU": 80}, dtype="fp16")
    assert rows[0]["phone"] and rows[0]["big GPU"]
    assert not rows[1]["phone"] and rows[1]["big GPU"]  # 14 GB in fp16
    assert rows[1]["needed_gb"] == 14
    out = capsys.readouterr().out
    assert "inference in fp16" in out and "❌" in out and "✅" in out


def test_fit_widget_builds_and_answers_like_the_function():
    box = lu.widgets.fit_widget({"7B": 7e9})
    model, dtype, mode, device, out = box.children
    dtype.value = "int4"
    assert dtype.value == "int4" and model.value == "7B"


def test_quantization_table_and_widget_agree_with_the_helper(capsys):
    import torch

    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    rows = lu.widgets.quantization_table(weight, bits=(8, 2))
    assert len(rows) == 8 and "per-channel" in capsys.readouterr().out
    assert rows[0] == lu.quantize.roundtrip_error(weight, 8, "affine", False)
    box = lu.widgets.quantization_widget(weight)
    bits, scheme, per_channel, out = box.children
    bits.value = 3
    assert bits.value == 3
    # the checkbox label is not squeezed into the fixed description column (the browser test measures it)
    assert per_channel.style.description_width == "initial" and per_channel.indent is False


def test_temperature_table_and_widget(capsys):
    import torch

    logits = torch.tensor([[0.0, 3.0], [1.0, -1.0]])
    rows = lu.widgets.temperature_table(logits, temperatures=(1, 8))
    assert len(rows) == 4 and abs(rows[0]["fresh"] - torch.softmax(logits[0], 0)[1].item()) < 1e-6
    assert rows[1]["fresh"] < rows[0]["fresh"]  # a higher temperature flattens
    assert "fresh" in capsys.readouterr().out
    box = lu.widgets.temperature_widget(logits)
    box.children[0].value = 4.0
    assert box.children[0].value == 4.0


def test_headless_runs_print_every_widget_as_its_table(monkeypatch, capsys):
    """The runner and nbgrader execute notebooks with no front end: widgets must print, not open comms (which can
    stall the executing client until the cell time-out, jupyter/nbclient#312)."""
    import torch

    from lecture_utils import config, progress, runner

    monkeypatch.delenv(config.HEADLESS_ENV, raising=False)
    monkeypatch.delenv(config.NBGRADER_ENV, raising=False)
    assert not config.headless()
    assert lu.widgets.fit_widget({"7B": 7e9}, static=True) is None
    assert "inference in fp32" in capsys.readouterr().out
    for name, value in ((config.HEADLESS_ENV, "1"), (config.NBGRADER_ENV, "autograde"),
                        (config.NBGRADER_ENV, "validate")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            assert config.headless() and not progress.in_notebook_kernel()
            assert lu.widgets.fit_widget({"7B": 7e9}) is None
            assert lu.widgets.quantization_widget(torch.ones(2, 4)) is None
            assert lu.widgets.temperature_widget(torch.zeros(1, 2)) is None
            out = capsys.readouterr().out
            assert "inference in fp32" in out and "per-channel" in out and "fresh" in out
    # the runner's kernels are headless; a widget asked for explicitly is still built
    assert runner.kernel_env("smoke", Path("r.json"), base={})[config.HEADLESS_ENV] == "1"
    assert lu.widgets.fit_widget({"7B": 7e9}, static=False) is not None


def test_empty_or_mismatched_tables_are_refused_by_widget_and_fallback_alike(capsys):
    """Nothing to show is said, never printed blank: an empty dict of models, no rows of logits, labels that do not
    match the logits' columns, no bit-widths or temperatures — each refused before anything is printed, in the live
    widget, the headless fallback and the plain table."""
    import pytest
    import torch

    W = lu.widgets
    for static in (True, False):
        with pytest.raises(ValueError, match="models must not be empty"):
            W.fit_widget({}, static=static)
        with pytest.raises(ValueError, match="weight must not be empty"):
            W.quantization_widget(torch.empty(0, 4), static=static)
        with pytest.raises(ValueError, match="logits must not be empty"):
            W.temperature_widget(torch.empty(0, 2), static=static)
        with pytest.raises(ValueError, match=r"logits has 3 classes .* but 2 labels"):
            W.temperature_widget(torch.zeros(2, 3), static=static)
    with pytest.raises(ValueError, match="devices must not be empty"):
        W.fit_table({"7B": 7e9}, {})
    with pytest.raises(TypeError, match="models must be a dict"):
        W.fit_table([7e9])
    with pytest.raises(ValueError, match=r"models\['7B'\] must be"):
        W.fit_table({"7B": -1})
    with pytest.raises(ValueError, match="Training is done in"):
        W.fit_table({"7B": 7e9}, dtype="int8", mode="training")
    with pytest.raises(ValueError, match="bits must not be empty"):
        W.quantization_table(torch.ones(2, 2), bits=())
    with pytest.raises(TypeError, match="bits must be a list"):
        W.quantization_table(torch.ones(2, 2), bits=8)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        W.quantization_table(torch.ones(4))
    with pytest.raises(ValueError, match="temperatures must not be empty"):
        W.temperature_table(torch.zeros(2, 2), temperatures=())
    with pytest.raises(ValueError, match="logits must be 2-D"):
        W.temperature_table(torch.zeros(2))
    with pytest.raises(TypeError, match="single string"):
        W.temperature_table(torch.zeros(2, 2), labels="ab")
    with pytest.raises(TypeError, match="static must be True or False"):
        W.fit_widget({"7B": 7e9}, static="no")
    assert capsys.readouterr().out == ""  # nothing half-printed before a refusal
    rows = W.temperature_table(torch.zeros(1, 3), temperatures=(2,), labels=("a", "b", "c"))  # any number of classes
    assert len(rows) == 1 and rows[0]["temperature"] == 2 and all(abs(rows[0][k] - 1 / 3) < 1e-6 for k in "abc")
