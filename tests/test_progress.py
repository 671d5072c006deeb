"""invcap.progress: live bars for people, one line for stored notebooks."""

import pytest

from invcap.progress import progress


def test_final_mode_prints_one_line(monkeypatch, capsys):
    monkeypatch.setenv("INVCAP_PROGRESS", "final")
    seen = [i for i in progress(range(5), desc="training")]
    assert seen == list(range(5))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("training: 5/5 it in ")


def test_final_mode_manual_bar_with_postfix(monkeypatch, capsys):
    monkeypatch.setenv("INVCAP_PROGRESS", "final")
    with progress(total=3, desc="steps") as bar:
        for _ in range(3):
            bar.update(1)
        bar.set_postfix(loss="1e-3")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3/3" in err[0] and "loss=1e-3" in err[0]


def test_off_and_disabled_print_nothing(monkeypatch, capsys):
    monkeypatch.setenv("INVCAP_PROGRESS", "off")
    assert sum(progress(range(3))) == 3
    monkeypatch.setenv("INVCAP_PROGRESS", "final")
    assert sum(progress(range(3), disable=True)) == 3
    assert capsys.readouterr().err == ""


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("INVCAP_PROGRESS", "verbose")
    with pytest.raises(ValueError, match="INVCAP_PROGRESS"):
        progress(range(2))
