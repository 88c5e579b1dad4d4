"""The query service's endpoints, one router per area, included by ``create_app``.

Runs in the API process. Each module holds the routes of one area (``ingest``,
``students``, ``engagement``, ``courses``, ``alerts``, ``pipeline``, ``dashboard``);
they take the app's query service and the caller's role from
:mod:`learntrack.api.deps` and document their errors with :mod:`learntrack.api.errors`.
"""
