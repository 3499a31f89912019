"""Progress of a long loop on stderr: tqdm's bar on a terminal; in a log (DVC, CI: stderr is a file
or a pipe) a plain line every few seconds and a last one at the end, since a log keeps a bar's
carriage-return redraws as one endless line."""
from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm


def is_terminal(file: TextIO) -> bool:
    """True if `file` is a terminal; False for files, pipes and replaced or closed streams."""
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of `total` units, `initial` of them done before (a resumed run).

    On a terminal: tqdm's bar with the latest values given to `update` as its postfix. Elsewhere:
    `line` every `every` seconds and, if there was progress since the last one, at `close`. `line` is
    a `str.format` template with the fields `n`, `total`, `rate` (items per second since the last
    line; a unit is `per_unit` items, e.g. a step of a batch of images) and, per keyword given to
    `update`, the mean of its values since the last line. Disabled (a process that does not report,
    `progress: false`): neither; `write` prints all the same. `bar=False`: plain lines even on a terminal."""

    def __init__(self, total: int, line: str, *, initial: int = 0, desc: str | None = None,
                 unit: str = "it", per_unit: int = 1, items: str = "items", enabled: bool = True,
                 every: float = 10.0, file: TextIO | None = None, bar: bool = True) -> None:
        self.total, self.line, self.per_unit, self.items, self.every = total, line, per_unit, items, every
        self.file = file if file is not None else sys.stderr  # late: tests and tools replace sys.stderr
        self.n = initial
        self.bar: tqdm | None = None
        # bar=False: plain lines on a terminal too (processes that share one terminal, whose bars
        # would overwrite each other)
        self._plain = enabled and not (bar and is_terminal(self.file))
        if enabled and not self._plain:
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                            file=self.file)
        # What the next plain line reports on: the updates since the last one.
        self._sums: dict[str, float] = {}
        self._count, self._n_line = 0, initial
        if self._plain:
            self._t_line = self._t = time.perf_counter()

    def update(self, n: int = 1, **values: float) -> None:
        """`n` more units done; `values` (a loss, say) are this update's, shown or averaged."""
        self.n += n
        if self.bar is not None:
            postfix = {k: f"{v:.4g}" for k, v in values.items()}
            rate = self.bar.format_dict["rate"]  # tqdm's smoothed units per second
            if self.per_unit != 1 and rate:  # tqdm shows units per second, not items
                postfix[f"{self.items}/s"] = f"{rate * self.per_unit:.1f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif self._plain:
            for k, v in values.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1
            self._t = time.perf_counter()
            if self._t - self._t_line >= self.every:
                self._print_line()

    def _print_line(self) -> None:
        means = {k: s / self._count for k, s in self._sums.items()}
        rate = self.per_unit * (self.n - self._n_line) / max(self._t - self._t_line, 1e-9)
        print(self.line.format(n=self.n, total=self.total, rate=rate, **means), file=self.file, flush=True)
        self._sums, self._count, self._n_line, self._t_line = {}, 0, self.n, self._t

    def write(self, msg: str, file: TextIO | None = None) -> None:
        """Print `msg` as a line of `file` (default: the progress's own) without tearing the bar."""
        file = file if file is not None else self.file
        with tqdm.external_write_mode(file=file):
            print(msg, file=file, flush=True)

    def close(self) -> None:
        """Close the bar, or print the last plain line: where the loop stopped. Idempotent."""
        if self.bar is not None:
            self.bar.close()
        elif self._plain and self.n > self._n_line:
            self._print_line()
        self._plain = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
