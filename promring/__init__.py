"""promring: a push-first, Thanos-style metrics system."""
import os

# gRPC's C core logs at INFO to stderr unless told otherwise (e.g. "Got goaway" when a peer
# stops); an operator's terminal gets our one-line errors and structured logs, not those.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
