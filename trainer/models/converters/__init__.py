"""Converters from official (non-mmseg) checkpoint formats to the mmseg parameter names
used by :mod:`trainer.models`, so converted weights load with ``strict=True``."""
