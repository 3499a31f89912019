"""caisp.progress: tqdm's bar on a terminal, plain periodic lines in a log (DVC, CI), and the
render stage's progress through it."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import caisp.progress
from caisp.progress import Progress, is_terminal


class FakeClock:
    """caisp.progress's `time`: every perf_counter() call is `tick` seconds after the previous one."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


LINE = "job: {n}/{total}, loss {loss:.3g}, {rate:.2f} images/s"


def test_a_log_gets_a_plain_line_every_10s_and_one_at_close(monkeypatch) -> None:
    monkeypatch.setattr(caisp.progress, "time", FakeClock(4.0))  # one call at start, one per update
    log = io.StringIO()
    p = Progress(5, LINE, unit="step", per_unit=2, file=log)
    for loss in (1.0, 2.0, 3.0, 4.0, 6.0):
        p.update(loss=loss)
    p.close()
    p.close()  # idempotent: no second last line
    # Updates at 8, 12, 16 s: a line at 16 s (12 s after the start), with the mean loss of the three
    # and 3 steps of 2 images in 12 s; then 2 steps in the 8 s to the last update, at close.
    assert log.getvalue() == ("job: 3/5, loss 2, 0.50 images/s\n"
                              "job: 5/5, loss 5, 0.50 images/s\n")


def test_a_resumed_loop_counts_from_initial_and_no_progress_prints_no_last_line(monkeypatch) -> None:
    monkeypatch.setattr(caisp.progress, "time", FakeClock(1.0))
    log = io.StringIO()
    p = Progress(10, "{n}/{total} at {rate:.1f}/s", initial=7, file=log)
    p.update(2)
    p.close()
    assert log.getvalue() == "9/10 at 2.0/s\n"  # 2 units in the 1 s from start to update
    log = io.StringIO()
    Progress(10, "{n}/{total}", initial=10, file=log).close()  # a finished run: nothing to report
    assert log.getvalue() == ""


def test_a_terminal_gets_the_tqdm_bar() -> None:
    term = Terminal()
    with Progress(3, LINE, desc="job", unit="step", file=term) as p:
        for _ in range(3):
            p.update(loss=0.25)
        p.write("a message")
    out = term.getvalue()
    assert "\r" in out and "3/3" in out and "loss=0.25" in out and "job" in out
    assert "images/s" not in out  # no plain lines
    # The message is a line of its own, not glued to the bar.
    assert "a message" in re.split(r"[\r\n]", out)


def test_disabled_prints_nothing_but_messages(monkeypatch) -> None:
    monkeypatch.setattr(caisp.progress, "time", FakeClock(100.0))
    for file in (io.StringIO(), Terminal()):
        p = Progress(2, LINE, enabled=False, file=file)
        p.update(loss=1.0)
        p.update(loss=1.0)
        p.close()
        assert file.getvalue() == ""
        p.write("resuming")
        assert file.getvalue() == "resuming\n"


def test_write_goes_to_the_given_file(capsys) -> None:
    p = Progress(1, "{n}", file=io.StringIO())
    p.write("skipped x", file=sys.stdout)
    p.close()
    assert capsys.readouterr().out == "skipped x\n"


def test_closed_or_odd_streams_are_not_terminals() -> None:
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)
    assert not is_terminal(object())  # type: ignore[arg-type]
    assert is_terminal(Terminal())


def test_render_all_in_a_log_prints_plain_lines(tmp_path: Path, monkeypatch, capsys) -> None:
    synthetic = pytest.importorskip("caisp.data.synthetic")
    from caisp.data.render import render_all

    raw = tmp_path / "raw"
    raw.mkdir()
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([x * 5, y * 7, 200 - x - y], -1).clip(0, 255).astype(np.uint8)
    for i in range(3):
        synthetic.write_dng(raw / f"s{i}.dng", rgb, seed=i, noise=False)
    (raw / "broken.dng").write_bytes(b"")  # sorted first: skipped, and still counted
    monkeypatch.setattr(caisp.progress, "time", FakeClock(6.0))
    manifest = render_all(raw, tmp_path / "out", workers=1, progress=True)
    assert [e["stem"] for e in manifest["images"]] == ["s0", "s1", "s2"]
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    # Start at 6 s, one image every 6 s: a line at the second (18 s), the last one at close.
    assert captured.err.splitlines() == ["render: 2/4 images, 0.2 images/s",
                                         "render: 4/4 images, 0.2 images/s"]
    assert captured.out.startswith("skipped broken.dng: ")
