"""Batch: the nightly Spark jobs that aggregate the lake into Cassandra."""
