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
