"""What operators see of the service itself: structured logs (logs.py), Prometheus metrics counted from
the audit log as it commits (metrics.py), HTTP latency and request context (http.py), and the
gauges read from the database at scrape time (gauges.py)."""
