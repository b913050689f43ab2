"""narig: the rig that runs sodium-metal battery experiments unattended."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("narig")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
