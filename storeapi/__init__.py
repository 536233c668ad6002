"""The Thanos StoreAPI contract: wire-compatible .proto files (proto/), their generated modules
(regenerate with generate.sh), a gRPC server over a SeriesSource, and an asyncio client."""
