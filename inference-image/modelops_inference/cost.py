"""PURE: the money a revision's gateway has cost since it started, as one ever-growing number.

Two kinds of price, both from settings the operator writes (``settings.py``):

- self-hosted: the pod's share of GPU (and CPU) price per hour, ``MODELOPS_PRICE_PER_HOUR``,
  accrued with the time the gateway has been up (a monotonic clock, read when asked, so a
  Prometheus scrape sees ``price x elapsed`` and ``rate()`` gives the hourly price / 3600);
- hosted: ``MODELOPS_PRICE_INPUT_PER_MTOK`` and ``MODELOPS_PRICE_OUTPUT_PER_MTOK`` dollars
  per million prompt and output tokens, accrued per request from the tokens the gateway
  counts (``accounting``: the engine's usage, else one output token per streamed chunk and
  the prompt's tokens estimated from its text, ``estimate_prompt_tokens``).

Both may be set; a price left unset adds nothing, and with no price at all the meter is
unpriced: the gateway then exports no cost, so a cost template finds no data (Inconclusive)
rather than a free revision.

>>> t = [100.0]
>>> m = CostMeter(per_hour=3.6, input_per_mtok=1.0, output_per_mtok=4.0, clock=lambda: t[0])
>>> t[0] = 110.0                        # 10 s at $3.60/h
>>> m.add_tokens(prompt=1000, output=500)  # $0.001 + $0.002
>>> round(m.total(), 6)
0.013
>>> CostMeter().priced
False
"""

from __future__ import annotations

import time
from typing import Callable

MILLION = 1_000_000


class CostMeter:
    def __init__(self, per_hour: float | None = None, input_per_mtok: float | None = None,
                 output_per_mtok: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.input_per_mtok = input_per_mtok
        self.output_per_mtok = output_per_mtok
        self._clock = clock
        self._started = clock()
        self._tokens_cost = 0.0

    @property
    def priced(self) -> bool:
        return any(p is not None for p in (self.per_hour, self.input_per_mtok, self.output_per_mtok))

    def add_tokens(self, *, prompt: int, output: int) -> None:
        self._tokens_cost += (prompt * (self.input_per_mtok or 0.0) + output * (self.output_per_mtok or 0.0)) / MILLION

    def total(self) -> float:
        """Dollars so far: never decreases (the clock is monotonic, token counts only grow)."""
        hours = max(0.0, self._clock() - self._started) / 3600.0
        return self._tokens_cost + hours * (self.per_hour or 0.0)
