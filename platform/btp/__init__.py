"""btp: the BridgeTower platform (data, training, search, tracking on Ray)."""

__version__ = "0.1.0"
