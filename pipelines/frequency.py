"""Grid-frequency statistics over tumbling windows (pure functions, no I/O).

A window ``[window_start_ms, window_start_ms + window_ms)`` is aligned to the UTC epoch, so
every process and every restart puts a sample in the same window. Inside a window the
samples of all assets are pooled:

* ``mean_hz``, ``min_hz``, ``max_hz`` over every sample (each sample weighs the same);
* ``deviation_hz = mean_hz - nominal_hz`` (negative: under-frequency, the grid is short of
  generation);
* ``rocof_hz_per_s``, the rate of change of frequency, as the least-squares slope of
  frequency over time with one intercept per asset (the "pooled within-asset" estimator).

Why that RoCoF estimator. IEC/IEEE 60255-118-1:2018 (synchrophasor measurements) defines
the rate of change of frequency as the time derivative of frequency, df/dt; how to
estimate it from a handful of discrete meter readings is left to the implementation. We
take the least-squares slope over the window's samples rather than the difference of two
consecutive window means because

1. it needs only the window itself: no state across windows, so it stays right across
   gaps, restarts and a first window, and needs no guess when the previous window is
   missing;
2. it uses every sample, so the noise of individual meters averages out (the two-point
   difference uses two numbers);
3. one intercept per asset removes constant per-meter offsets (one inverter reads
   50.012 Hz, another 49.995 Hz at the same instant): with a single pooled intercept, the
   mere order in which assets report inside the window would show up as a fake slope.

The slope is ``sum_a sum_i (t_ai - mean_t_a)(f_ai - mean_f_a) / sum_a sum_i (t_ai -
mean_t_a)**2`` with ``t`` in seconds. When no asset has two samples at distinct times the
slope is undefined; the function then reports ``0.0`` Hz/s (no evidence of a change), and
callers can tell that case by ``samples``/``assets``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "AssetMoments",
    "FrequencyAccumulator",
    "FrequencySample",
    "WindowStats",
    "add_sample",
    "merge_accumulators",
    "rocof_hz_per_s",
    "summarize_window",
    "window_start_ms",
    "window_stats",
]


class FrequencySample(NamedTuple):
    """One frequency reading of one asset.

    Attributes:
        site: Site id.
        asset: Asset id.
        ts_ms: Time of measurement, UTC epoch milliseconds.
        freq_hz: Measured grid frequency in Hz.

    """

    site: str
    asset: str
    ts_ms: int
    freq_hz: float


@dataclass(frozen=True)
class WindowStats:
    """Frequency statistics of one site over one window.

    Attributes:
        window_start_ms: Window start, inclusive, UTC epoch milliseconds.
        window_end_ms: Window end, exclusive, UTC epoch milliseconds.
        nominal_hz: Nominal grid frequency in Hz (50 or 60).
        mean_hz: Mean of all samples, Hz.
        min_hz: Smallest sample, Hz.
        max_hz: Largest sample, Hz.
        deviation_hz: ``mean_hz - nominal_hz``, Hz.
        rocof_hz_per_s: Pooled within-asset least-squares slope, Hz/s (0.0 if undefined).
        samples: Number of samples.
        assets: Number of distinct assets that reported a sample.

    """

    window_start_ms: int
    window_end_ms: int
    nominal_hz: float
    mean_hz: float
    min_hz: float
    max_hz: float
    deviation_hz: float
    rocof_hz_per_s: float
    samples: int
    assets: int


def window_start_ms(ts_ms: int, window_ms: int) -> int:
    """Return the start of the epoch-aligned window holding ``ts_ms``.

    Args:
        ts_ms: A time, UTC epoch milliseconds.
        window_ms: Window length in milliseconds, > 0.

    Returns:
        ``floor(ts_ms / window_ms) * window_ms``.

    """
    if window_ms <= 0:
        raise ValueError(f"window_ms must be > 0, got {window_ms}")
    return (ts_ms // window_ms) * window_ms


@dataclass
class AssetMoments:
    """Running sums of one asset's samples inside one window.

    Times and frequencies are kept relative to the asset's first sample in the window
    (``ref_ts_ms``, ``ref_hz``) so that the sums of products stay small and exact enough.
    """

    ref_ts_ms: int
    ref_hz: float
    n: int = 0
    sum_t_s: float = 0.0
    sum_f_hz: float = 0.0
    sum_tt_s2: float = 0.0
    sum_tf_s_hz: float = 0.0

    def __reduce__(self) -> tuple[type[AssetMoments], tuple[int | float, ...]]:
        """Copy and pickle as one flat tuple: recovery snapshots copy thousands of these."""
        return (
            AssetMoments,
            (
                self.ref_ts_ms,
                self.ref_hz,
                self.n,
                self.sum_t_s,
                self.sum_f_hz,
                self.sum_tt_s2,
                self.sum_tf_s_hz,
            ),
        )

    def add(self, ts_ms: int, freq_hz: float) -> None:
        """Add one sample."""
        t_s = (ts_ms - self.ref_ts_ms) / 1000.0
        f_hz = freq_hz - self.ref_hz
        self.n += 1
        self.sum_t_s += t_s
        self.sum_f_hz += f_hz
        self.sum_tt_s2 += t_s * t_s
        self.sum_tf_s_hz += t_s * f_hz

    def centered(self) -> tuple[float, float]:
        """Return ``(Sxx, Sxy)``: centred sums of squares of t and of products t*f."""
        if self.n == 0:
            return 0.0, 0.0
        s_xx = self.sum_tt_s2 - self.sum_t_s * self.sum_t_s / self.n
        s_xy = self.sum_tf_s_hz - self.sum_t_s * self.sum_f_hz / self.n
        return max(s_xx, 0.0), s_xy

    def merged(self, other: AssetMoments) -> AssetMoments:
        """Return the moments of both sample sets, in this one's reference frame."""
        dt_s = (other.ref_ts_ms - self.ref_ts_ms) / 1000.0
        df_hz = other.ref_hz - self.ref_hz
        # Shift the other's sums into this frame: t' = t + dt, f' = f + df.
        sum_t = other.sum_t_s + other.n * dt_s
        sum_f = other.sum_f_hz + other.n * df_hz
        sum_tt = other.sum_tt_s2 + 2 * dt_s * other.sum_t_s + other.n * dt_s * dt_s
        sum_tf = (
            other.sum_tf_s_hz
            + dt_s * other.sum_f_hz
            + df_hz * other.sum_t_s
            + other.n * dt_s * df_hz
        )
        return AssetMoments(
            ref_ts_ms=self.ref_ts_ms,
            ref_hz=self.ref_hz,
            n=self.n + other.n,
            sum_t_s=self.sum_t_s + sum_t,
            sum_f_hz=self.sum_f_hz + sum_f,
            sum_tt_s2=self.sum_tt_s2 + sum_tt,
            sum_tf_s_hz=self.sum_tf_s_hz + sum_tf,
        )


@dataclass
class FrequencyAccumulator:
    """Sufficient statistics of one window's samples (what a window fold keeps).

    Memory is O(assets), not O(samples): 1,000 inverters at 5 Hz keep 1,000 small records.
    """

    samples: int = 0
    sum_hz: float = 0.0
    min_hz: float = float("inf")
    max_hz: float = float("-inf")
    per_asset: dict[str, AssetMoments] = field(default_factory=dict)


def add_sample(acc: FrequencyAccumulator, sample: FrequencySample) -> FrequencyAccumulator:
    """Fold one sample into ``acc`` (updated in place and returned, as Bytewax folds expect)."""
    acc.samples += 1
    acc.sum_hz += sample.freq_hz
    acc.min_hz = min(acc.min_hz, sample.freq_hz)
    acc.max_hz = max(acc.max_hz, sample.freq_hz)
    moments = acc.per_asset.get(sample.asset)
    if moments is None:
        moments = AssetMoments(ref_ts_ms=sample.ts_ms, ref_hz=sample.freq_hz)
        acc.per_asset[sample.asset] = moments
    moments.add(sample.ts_ms, sample.freq_hz)
    return acc


def merge_accumulators(
    left: FrequencyAccumulator, right: FrequencyAccumulator
) -> FrequencyAccumulator:
    """Combine two accumulators of the same window into a new one."""
    per_asset = dict(left.per_asset)
    for asset, moments in right.per_asset.items():
        mine = per_asset.get(asset)
        per_asset[asset] = moments if mine is None else mine.merged(moments)
    return FrequencyAccumulator(
        samples=left.samples + right.samples,
        sum_hz=left.sum_hz + right.sum_hz,
        min_hz=min(left.min_hz, right.min_hz),
        max_hz=max(left.max_hz, right.max_hz),
        per_asset=per_asset,
    )


def _pooled_slope_hz_per_s(moments: Iterable[AssetMoments]) -> float:
    s_xx_total = 0.0
    s_xy_total = 0.0
    for m in moments:
        s_xx, s_xy = m.centered()
        s_xx_total += s_xx
        s_xy_total += s_xy
    # Sxx is a sum of squares of time offsets in s; below 1 µs² there is no spread in time.
    if s_xx_total <= 1e-12:
        return 0.0
    return s_xy_total / s_xx_total


def summarize_window(
    acc: FrequencyAccumulator,
    *,
    window_start_ms: int,
    window_ms: int,
    nominal_hz: float,
) -> WindowStats | None:
    """Turn a window's accumulator into :class:`WindowStats`.

    Args:
        acc: The window's sufficient statistics.
        window_start_ms: Window start, UTC epoch ms.
        window_ms: Window length, ms.
        nominal_hz: Nominal grid frequency, Hz.

    Returns:
        The statistics, or ``None`` for a window without samples.

    """
    if acc.samples == 0:
        return None
    mean_hz = acc.sum_hz / acc.samples
    return WindowStats(
        window_start_ms=window_start_ms,
        window_end_ms=window_start_ms + window_ms,
        nominal_hz=nominal_hz,
        mean_hz=mean_hz,
        min_hz=acc.min_hz,
        max_hz=acc.max_hz,
        deviation_hz=mean_hz - nominal_hz,
        rocof_hz_per_s=_pooled_slope_hz_per_s(acc.per_asset.values()),
        samples=acc.samples,
        assets=len(acc.per_asset),
    )


def rocof_hz_per_s(samples: Iterable[FrequencySample]) -> float:
    """Rate of change of frequency of a set of samples, Hz/s.

    The least-squares slope of ``freq_hz`` over ``ts_ms`` (converted to s) with one
    intercept per asset; 0.0 when undefined (no asset has two samples at distinct times).
    See the module docstring for why this estimator.
    """
    acc = FrequencyAccumulator()
    for sample in samples:
        add_sample(acc, sample)
    return _pooled_slope_hz_per_s(acc.per_asset.values())


def window_stats(
    samples: Iterable[FrequencySample],
    *,
    window_start_ms: int,
    window_ms: int,
    nominal_hz: float,
) -> WindowStats | None:
    """Statistics of the samples of one window (see :func:`summarize_window`)."""
    acc = FrequencyAccumulator()
    for sample in samples:
        add_sample(acc, sample)
    return summarize_window(
        acc, window_start_ms=window_start_ms, window_ms=window_ms, nominal_hz=nominal_hz
    )
