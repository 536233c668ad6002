"""``promring rule``: Prometheus recording and alerting rules evaluated against queriers.

Modules: ``rulefile`` (loading/validation), ``template`` (Go text/template subset),
``alerting`` (alert state machine), ``group`` (scheduling and evaluation), ``queryclient``
(PromQL over HTTP), ``notifier`` (Alertmanager v2), ``storage`` (own TSDB or remote write),
``api`` (HTTP API), ``server`` (the component).
"""
