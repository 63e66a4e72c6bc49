"""The dataset format: what a sample is, how shards store it, and how a dataset is laid out and read."""
