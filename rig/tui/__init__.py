"""The terminal monitor (`rig monitor`): watch a run from its store and steer it."""

from rig.tui.app import MonitorApp, run_monitor
from rig.tui.data import ChannelRow, Snapshot, StoreView

__all__ = ["ChannelRow", "MonitorApp", "Snapshot", "StoreView", "run_monitor"]
