"""Sinks: one module per store (MongoDB, Redis, graph, lake, Cassandra, dead letters).

Every sink is idempotent and opens its client inside the task from picklable settings;
sinks never import ``learntrack.streaming``.
"""
