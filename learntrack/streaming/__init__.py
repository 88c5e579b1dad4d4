"""Streaming: the Spark Structured Streaming job that reads activity from Kafka.

Code here runs on the Spark driver (planning, offsets, the query) and on executors
(the Kafka source's ``read``, parsing, scoring); it hands rows to ``learntrack.sinks``.
"""
