"""The query service (FastAPI): the six operations for course apps and teachers."""
