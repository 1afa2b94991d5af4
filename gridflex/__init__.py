"""gridflex: EVs and bidirectional inverters as a flexible grid asset (shared core)."""

__version__ = "0.1.0"
