"""TinCanPython's ``RemoteLRS`` (``tincan``): statements and a state document.

Usage: ``python tincan_client.py BASE_URL USER PASSWORD < statements.json``;
prints ``{"saved": [id...], "queried": [id...], "pages": n, "retrieved": {...},
"state": "..."}``: each statement saved (PUT when it has an id, else POST), the
first one's verb queried two per page (following ``more``), the first statement
retrieved by id, and a state document saved and read back.
"""

from __future__ import annotations

import json
import sys

from tincan import Activity, Agent, RemoteLRS, StateDocument, Statement, Verb


def _check(response: object, what: str) -> None:
    if not getattr(response, "success", False):
        status = getattr(getattr(response, "response", None), "status", "?")
        data = getattr(response, "data", b"")
        sys.stderr.write(f"{what} failed: HTTP {status} {data!r}\n")
        raise SystemExit(1)


def main() -> None:
    """Save, query (with paging), retrieve, and a state document round trip."""
    base_url, user, password = sys.argv[1:4]
    statements = json.load(sys.stdin)
    lrs = RemoteLRS(
        endpoint=base_url.rstrip("/") + "/xAPI/", username=user, password=password
    )
    saved = []
    for raw in statements:
        response = lrs.save_statement(Statement.from_json(json.dumps(raw)))
        _check(response, "save_statement")
        saved.append(str(response.content.id))
    verb = Verb(id=statements[0]["verb"]["id"])
    response = lrs.query_statements({"verb": verb, "limit": 2})
    _check(response, "query_statements")
    queried = [str(s.id) for s in response.content.statements]
    pages = 1
    while response.content.more:
        response = lrs.more_statements(response.content)
        _check(response, "more_statements")
        queried += [str(s.id) for s in response.content.statements]
        pages += 1
    response = lrs.retrieve_statement(saved[0])
    _check(response, "retrieve_statement")
    retrieved = json.loads(response.content.to_json())
    activity = Activity(id=statements[0]["object"]["id"])
    agent = Agent(mbox="mailto:tincan@example.org")
    doc = StateDocument(
        id="bookmark",
        activity=activity,
        agent=agent,
        content='{"page": 7}',  # a str: tincan's Document takes no bytes
        content_type="application/json",
    )
    _check(lrs.save_state(doc), "save_state")
    response = lrs.retrieve_state(activity, agent, "bookmark")
    _check(response, "retrieve_state")
    content = response.content.content
    state = content.decode() if isinstance(content, bytes | bytearray) else str(content)
    sys.stdout.write(
        json.dumps(
            {
                "saved": saved,
                "queried": queried,
                "pages": pages,
                "retrieved": retrieved,
                "state": state,
            }
        )
    )


if __name__ == "__main__":
    main()
