"""The compactor: compaction, offline deduplication, downsampling and retention of blocks."""
from .config import CompactConfig, add_compact_flags, cli_config
from .compactor import Compactor, PassResult
from .verify import Issue, verify

__all__ = ["CompactConfig", "Compactor", "Issue", "PassResult", "add_compact_flags",
           "cli_config", "verify"]
