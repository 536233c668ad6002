"""Store gateway: serves blocks from object storage over the StoreAPI (``promring store``)."""
