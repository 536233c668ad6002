"""Ships locally cut TSDB blocks to object storage, once each, in Thanos's bucket layout."""
from .shipper import Shipper, ShipperMetrics, ShipperOptions, ShipperState

__all__ = ["Shipper", "ShipperMetrics", "ShipperOptions", "ShipperState"]
