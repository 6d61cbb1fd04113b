"""`core.progress`: a tqdm bar on a terminal, plain lines (no carriage returns) in logs."""

from __future__ import annotations

import io
import re

import pytest

from cardioformer_jax.core import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain(total, clock, **kwargs) -> tuple[progress.PlainProgress, io.StringIO]:
    log = io.StringIO()
    return progress.PlainProgress(total, "building ptbxl train", "records", log, clock=clock,
                                  **kwargs), log


def test_a_line_per_ten_percent_then_a_closing_line():
    clock = _Clock()
    bar, log = _plain(14000, clock)
    for _ in range(14000):
        clock.now += 0.01  # 140 s in all: the 10% steps are 14 s apart
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "building ptbxl train: 1400/14000 records (10%), 14s"
    assert lines[-1] == "building ptbxl train: 14000/14000 records (100%), 2m20s"
    assert len(lines) == 10  # 10%, ..., 100%; close() does not repeat the last one
    bar.close()  # idempotent
    assert len(log.getvalue().splitlines()) == 10


def test_fast_loops_are_not_flooded_and_slow_ones_still_report():
    clock = _Clock()
    bar, log = _plain(100, clock)
    bar.update(50)  # 50% at once, but no time has passed: no line yet
    assert log.getvalue() == ""
    clock.now += 2.0
    bar.update()
    assert log.getvalue() == "building ptbxl train: 51/100 records (51%), 2s\n"
    clock.now += 31.0  # no new 10% step, but half a minute without a line
    bar.update()
    assert log.getvalue().splitlines()[-1] == "building ptbxl train: 52/100 records (52%), 33s"


def test_unknown_total_reports_by_time_only():
    clock = _Clock()
    bar, log = _plain(None, clock)
    for _ in range(5):
        clock.now += 10.0
        bar.update(7)
    bar.close()
    assert log.getvalue().splitlines() == ["building ptbxl train: 21 records, 30s",
                                           "building ptbxl train: 35 records, 50s"]


def test_nothing_counted_writes_nothing():
    bar, log = _plain(10, _Clock())
    bar.close()
    assert log.getvalue() == ""


@pytest.mark.parametrize("total, every_percent", [(-1, 10), (10, 0), (10, 101)])
def test_bad_settings_are_refused(total, every_percent):
    with pytest.raises(ValueError, match="building ptbxl train"):
        _plain(total, _Clock(), every_percent=every_percent)


def test_terminal_gets_tqdm_a_log_gets_lines_disabled_gets_nothing():
    terminal, log, quiet = _Terminal(), io.StringIO(), io.StringIO()
    for stream, enabled in ((terminal, True), (log, True), (quiet, False)):
        with progress.progress(12, "evaluating test", "batches", stream=stream,
                               enabled=enabled) as bar:
            for _ in range(12):
                bar.update()
    assert "\r" in terminal.getvalue() and "12/12" in terminal.getvalue()
    assert re.fullmatch(r"evaluating test: 12/12 batches \(100%\), \d+s\n", log.getvalue())
    assert quiet.getvalue() == ""


def test_track_counts_what_the_caller_finished(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)  # the default stream, read at the call
    seen = [x for x in progress.track(range(30), 30, "predicting", "records") if x % 2]
    assert len(seen) == 15
    assert re.fullmatch(r"predicting: 30/30 records \(100%\), \d+s\n", log.getvalue())
