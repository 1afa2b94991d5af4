"""What the demo shows: the live terminal view of the MQTT topics and the banner lines."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from gridflex import jsonio
from gridflex.demo.plan import DemoPlan

__all__ = ["LiveView", "api_banner", "app_banner"]


def api_banner(plan: DemoPlan) -> str | None:
    """The banner line with the API's URL and token, when the demo serves the API.

    ``gridflex control`` serves it; the demo runs the writer whenever it has assets.
    """
    if plan.api_url is None or plan.api_token is None or not (plan.inverters or plan.chargers):
        return None
    return f"REST API        {plan.api_url}   token {plan.api_token}"


def app_banner(plan: DemoPlan) -> str | None:
    """The banner line with the analytics app's URL, when the demo runs the app."""
    return None if plan.app_url is None else f"analytics app   {plan.app_url}"


def _num(obj: Any, key: str) -> float | None:
    """``obj[key]`` as a finite float, else ``None`` (the view trusts no payload)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(obj: Any, key: str) -> str | None:
    """``obj[key]`` if it is a string, on one line; else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return " ".join(value.split()) if isinstance(value, str) else None


def _fmt(value: float | None, spec: str, default: str = "?") -> str:
    return default if value is None else format(value, spec)


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


@dataclass
class LiveView:
    """Latest state per asset and of the grid and site, fed from MQTT, rendered as text.

    ``on_message`` keeps whatever JSON object arrives; ``render`` reads each field leniently
    (a missing, mistyped or non-finite value shows as blank or ``?``), so no payload can
    stop the view.
    """

    site: str
    dispatch_mode: str = "off"
    api_banner: str | None = None
    app_banner: str | None = None
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    deadletters: int = 0
    telemetry_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Fold one MQTT message into the view; anything that is not a JSON object is ignored."""
        try:
            obj = jsonio.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        parts = topic.split("/")
        if len(parts) < 3:
            return
        with self.lock:
            if parts[2] == "deadletter":
                self.deadletters += 1
            elif parts[3:] == ["grid", "frequency"]:
                self.grid = obj
            elif parts[3:] == ["summary"]:
                self.summary = obj
            elif len(parts) == 6:
                self._fold_asset(parts[3], parts[4], parts[5], obj)

    def _fold_asset(self, group: str, asset: str, leaf: str, obj: dict[str, Any]) -> None:
        if group in ("inverter", "evse") and leaf in ("telemetry", "status"):
            if leaf == "telemetry":
                self.telemetry_count += 1
            state = self.assets.setdefault(asset, {})
            state["kind"] = group
            state[leaf] = obj
        elif group == "dispatch" and leaf in ("command", "ack"):
            self.assets.setdefault(asset, {})[leaf] = obj

    def _dispatch_lines(self, summary: dict[str, Any]) -> list[str]:
        if not summary:
            waiting = "" if self.dispatch_mode == "off" else "   (waiting for the site summary)"
            return [f"dispatch        {self.dispatch_mode}{waiting}"]
        mode = _shorten(_text(summary, "mode") or "?", 5)
        online, total = _num(summary, "assets_online"), _num(summary, "assets_total")
        kw = {k: _num(summary, k) for k in ("requested_w", "allocated_w", "shortfall_w")}
        flex_c, flex_d = _num(summary, "flex_charge_w"), _num(summary, "flex_discharge_w")
        return [
            f"dispatch        {mode:5} site {_fmt(_num(summary, 'freq_hz'), '.3f')} Hz   "
            f"requested {_fmt(_kw(kw['requested_w']), '+.1f')} / "
            f"allocated {_fmt(_kw(kw['allocated_w']), '+.1f')} / "
            f"shortfall {_fmt(_kw(kw['shortfall_w']), '.1f')} kW",
            f"flexibility     charge {_fmt(_kw(flex_c), '.1f')} kW   "
            f"discharge {_fmt(_kw(flex_d), '.1f')} kW   "
            f"({_fmt(online, '.0f')} of {_fmt(total, '.0f')} assets online)",
        ]

    def render(self, max_rows: int = 40, width: int = 120) -> str:
        """The screen: grid, site and dispatch lines, then one row per asset.

        Each row ends with the asset's last command (its setpoint), the control writer's
        last ack (result) and the command's reason, shortened so the row fits in ``width``
        columns: command, ack and measured power side by side.
        """
        with self.lock:
            grid = dict(self.grid)
            summary = dict(self.summary)
            assets = {k: dict(v) for k, v in sorted(self.assets.items())}
            dead, count = self.deadletters, self.telemetry_count
        out = [f"gridflex demo - site {self.site}   (Ctrl-C stops)", ""]
        out[1:1] = self._banners()
        if grid:
            dev, rocof = _num(grid, "deviation_hz"), _num(grid, "rocof_hz_per_s")
            out.append(
                f"grid frequency  {_fmt(_num(grid, 'mean_hz'), '.3f')} Hz   deviation "
                f"{_fmt(None if dev is None else dev * 1000, '+7.1f')} mHz   RoCoF "
                f"{_fmt(None if rocof is None else rocof * 1000, '+7.1f')} mHz/s   "
                f"({_fmt(_num(grid, 'assets'), '.0f')} assets, "
                f"{_fmt(_num(grid, 'samples'), '.0f')} samples)"
            )
        else:
            out.append("grid frequency  (waiting for the first window)")
        total_w = sum(_num(a.get("telemetry"), "power_w") or 0.0 for a in assets.values())
        out.append(
            f"site power      {total_w / 1000:+9.1f} kW    telemetry messages {count}"
            f"    dead letters {dead}"
        )
        out += self._dispatch_lines(summary)
        out.append("")
        head = (
            f"{'asset':10} {'kind':8} {'status':10} {'power kW':>9} {'SoC %':>6} {'Hz':>7} "
            f"{'cmd kW':>8} {'ack':8}"
        )
        out.append(f"{head} reason" if width - len(head) > 8 else head)
        for name, state in list(assets.items())[:max_rows]:
            out.append(_asset_row(name, state, width))
        if len(assets) > max_rows:
            out.append(f"... and {len(assets) - max_rows} more")
        return "\n".join(out)

    def _banners(self) -> list[str]:
        return [b for b in (self.api_banner, self.app_banner) if b is not None]

    def headline(self) -> str:
        """Grid frequency and dispatch in one line, for a log instead of the screen."""
        lines = self.render(max_rows=0).splitlines()
        skip = len(self._banners())
        return f"{lines[2 + skip]} | {lines[4 + skip]}"


def _kw(value_w: float | None) -> float | None:
    return None if value_w is None else value_w / 1000


def _asset_row(name: str, state: dict[str, Any], width: int) -> str:
    tel, status, command = state.get("telemetry"), state.get("status"), state.get("command")
    ack = state.get("ack")
    row = (
        f"{_shorten(name, 10):10} {_shorten(str(state.get('kind', '?')), 8):8} "
        f"{_shorten(_text(status, 'state') or '?', 10):10} "
        f"{_fmt(_kw(_num(tel, 'power_w')), '+9.2f', ''):>9} "
        f"{_fmt(_num(tel, 'soc_pct'), '.1f', ''):>6} "
        f"{_fmt(_num(tel, 'freq_hz'), '.3f', ''):>7} "
        f"{_fmt(_kw(_num(command, 'setpoint_w')), '+8.2f', ''):>8} "
        f"{_shorten(_text(ack, 'result') or '', 8):8}"
    )
    reason = _text(command, "reason")
    room = width - len(row) - 1
    if reason and room > 8:
        row += " " + _shorten(reason, room)
    return row
