"""promring's load test (not installed with the package): locust users and a headless runner."""
