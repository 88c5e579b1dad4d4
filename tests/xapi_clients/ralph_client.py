"""ralph's LRS data backend (``ralph-malph``) writes statements, then reads them.

Usage: ``python ralph_client.py BASE_URL USER PASSWORD < statements.json``; prints
``{"written": n, "read": [statement, ...]}`` (read back by the first statement's
verb, two per page, so ralph follows the ``more`` IRLs).
"""

from __future__ import annotations

import json
import sys

from ralph.backends.data.lrs import LRSDataBackend, LRSDataBackendSettings
from ralph.backends.lrs.base import LRSStatementsQuery


def main() -> None:
    """Write the statements of stdin in chunks of 3; read them back."""
    base_url, user, password = sys.argv[1:4]
    statements = json.load(sys.stdin)
    backend = LRSDataBackend(
        LRSDataBackendSettings(BASE_URL=base_url, USERNAME=user, PASSWORD=password)
    )
    try:
        written = backend.write(statements, chunk_size=3)
        query = LRSStatementsQuery(verb=statements[0]["verb"]["id"])
        read = list(backend.read(query=query, chunk_size=2))
    finally:
        backend.close()
    sys.stdout.write(json.dumps({"written": written, "read": read}))


if __name__ == "__main__":
    main()
