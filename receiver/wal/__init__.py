"""Write-ahead log of the ingestor: remote-write requests are acknowledged only once logged here."""
from .records import (ExemplarsRecord, HistogramsRecord, OOOHistogramsRecord, OOOSamplesRecord, SamplesRecord,
                      SeriesRecord)
from .wal import WAL, WALConfig, WALCorruptionError

__all__ = ["WAL", "WALConfig", "WALCorruptionError", "SamplesRecord", "SeriesRecord",
           "HistogramsRecord", "OOOSamplesRecord", "OOOHistogramsRecord", "ExemplarsRecord"]
