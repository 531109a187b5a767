"""Evaluating flows over datasets: quality, cost and latency side by side (`baton eval`, `baton compare`)."""
