"""Scripts that drive real xAPI clients against a running ``learntrack api``.

Each runs as a subprocess of ``tests/test_xapi_lrs_clients.py``, under the Python
that has the client installed (the test venv, or a venv of their own when the
client's dependencies clash with LearnTrack's pins): arguments are the LRS's base
URL, a user name and a key; statements come on stdin as a JSON list; the result
is one JSON object on stdout.
"""
