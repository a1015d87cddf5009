"""nmt: attention-based neural machine translation after Luong, Pham & Manning (2015)."""

__version__ = "0.1.0"
