"""PromQL engine: parse with our parser (querier.promql.parser), evaluate every node for all steps at once with numpy."""
from querier.promql.engine import Engine
from querier.promql.types import EngineOptions, PromQLError, Queryable, QueryResult, Series

__all__ = ["Engine", "EngineOptions", "PromQLError", "Queryable", "QueryResult", "Series"]
