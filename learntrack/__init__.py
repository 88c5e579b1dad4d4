"""LearnTrack: streaming analytics for online learning.

The package's folders are the stages of the data flow: ``producers`` (course apps
and the load generator publish events) -> Kafka -> ``streaming`` (Spark reads and
scores) -> ``sinks`` (MongoDB, Redis, graph, lake) -> ``batch`` (nightly Spark to
Cassandra) -> ``api`` (query service). ``stack`` starts the local servers on
machines without Docker.
"""

__version__ = "0.1.0"
