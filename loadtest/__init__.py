"""The load test: the service, a real Prometheus scraping it and Locust, with a report of both sides.

`python -m loadtest` (or `make loadtest`) runs it; `loadtest/locustfile.py` holds the traffic mix and
is also what the compose `loadtest` service runs.
"""
