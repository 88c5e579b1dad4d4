"""xAPI statement rules (TEMPORARY minimal version for the xapi-lrs branch).

Pure; runs in the API process. The full validator (every field of the
specification) is written on the ``xapi-spec`` branch and replaces this file at
merge: the names and signatures here are that module's, the checks a small subset
(required fields, ids, IRIs, timestamps, actor forms, version header).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0.3", "2.0.0")
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
_IFIS = ("mbox", "mbox_sha1sum", "openid", "account")
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_VERSION = re.compile(r"^(1\.0(\.[0-9]+)?|2\.0(\.0)?)$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
    r"[0-9a-fA-F]{12}$"
)


class StatementError(ValueError):
    """A statement (or parameter) breaks the specification; ``path`` names where."""

    def __init__(self, reason: str, path: str = "statement") -> None:
        """Keep the reason and the path of the offending field."""
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.path = path


def parse_version_header(value: str | None) -> str:
    """The version a request speaks ("1.0.3" or "2.0.0"); StatementError if not."""
    if value is None or not _VERSION.match(value.strip()):
        msg = f"unsupported X-Experience-API-Version {value!r}"
        raise StatementError(msg, "X-Experience-API-Version")
    return "2.0.0" if value.strip().startswith("2.") else "1.0.3"


def _timestamp(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise StatementError("must be an ISO 8601 timestamp", path)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StatementError("must be an ISO 8601 timestamp", path) from None
    if parsed.tzinfo is None:
        raise StatementError("must carry a timezone", path)


def _iri(value: Any, path: str) -> None:
    if not isinstance(value, str) or not _IRI.match(value):
        raise StatementError("must be an IRI", path)


def validate_agent(agent: Any, path: str, *, group_ok: bool = True) -> None:
    """An Agent or Group: exactly one IFI (a Group may have none, with members)."""
    if not isinstance(agent, Mapping):
        raise StatementError("must be an object", path)
    kind = agent.get("objectType", "Agent")
    if kind not in ("Agent", "Group") or (kind == "Group" and not group_ok):
        raise StatementError(f"objectType {kind!r} is not allowed here", path)
    ifis = [k for k in _IFIS if k in agent]
    if len(ifis) > 1:
        raise StatementError("has more than one identifier", path)
    if kind == "Agent" and not ifis:
        raise StatementError(
            "an Agent needs mbox, mbox_sha1sum, openid or account", path
        )
    if kind == "Group" and not ifis and not isinstance(agent.get("member"), list):
        raise StatementError("an anonymous Group needs a member list", path)
    if "mbox" in agent and (
        not isinstance(agent["mbox"], str) or not agent["mbox"].startswith("mailto:")
    ):
        raise StatementError("must be a mailto: IRI", f"{path}.mbox")
    account = agent.get("account")
    if "account" in agent and (
        not isinstance(account, Mapping)
        or not isinstance(account.get("name"), str)
        or not isinstance(account.get("homePage"), str)
    ):
        raise StatementError("needs homePage and name", f"{path}.account")
    for i, member in enumerate(agent.get("member") or []):
        validate_agent(member, f"{path}.member[{i}]", group_ok=False)


def _object(obj: Any, path: str, *, sub: bool) -> None:
    if not isinstance(obj, Mapping):
        raise StatementError("must be an object", path)
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        _iri(obj.get("id"), f"{path}.id")
    elif kind in ("Agent", "Group"):
        validate_agent(obj, path)
    elif kind == "StatementRef":
        if not isinstance(obj.get("id"), str) or not _UUID.match(obj["id"]):
            raise StatementError("must be a UUID", f"{path}.id")
    elif kind == "SubStatement" and not sub:
        _statement_body(obj, path, sub=True)
    else:
        raise StatementError(f"unknown objectType {kind!r}", f"{path}.objectType")


def _statement_body(stmt: Mapping[str, Any], path: str, *, sub: bool) -> None:
    for key in ("actor", "verb", "object"):
        if key not in stmt:
            raise StatementError("is required", f"{path}.{key}")
    validate_agent(stmt["actor"], f"{path}.actor")
    verb = stmt["verb"]
    if not isinstance(verb, Mapping):
        raise StatementError("must be an object", f"{path}.verb")
    _iri(verb.get("id"), f"{path}.verb.id")
    _object(stmt["object"], f"{path}.object", sub=sub)
    if "timestamp" in stmt:
        _timestamp(stmt["timestamp"], f"{path}.timestamp")
    context = stmt.get("context")
    if context is not None:
        if not isinstance(context, Mapping):
            raise StatementError("must be an object", f"{path}.context")
        reg = context.get("registration")
        if reg is not None and (not isinstance(reg, str) or not _UUID.match(reg)):
            raise StatementError("must be a UUID", f"{path}.context.registration")


def validate_statement(
    statement: Any, *, version: str = "1.0.3", path: str = "statement"
) -> None:
    """Raise StatementError if ``statement`` breaks the (subset of) rules."""
    if not isinstance(statement, Mapping):
        raise StatementError("must be a JSON object", path)
    sid = statement.get("id")
    if "id" in statement and (not isinstance(sid, str) or not _UUID.match(sid)):
        raise StatementError("must be a UUID", f"{path}.id")
    if "stored" in statement:
        _timestamp(statement["stored"], f"{path}.stored")
    if "version" in statement and (
        not isinstance(statement["version"], str)
        or not _VERSION.match(statement["version"])
    ):
        raise StatementError("unsupported version", f"{path}.version")
    _statement_body(statement, path, sub=False)
    obj = statement["object"]
    verb_id = statement["verb"]["id"]
    if verb_id == VOIDED and obj.get("objectType") != "StatementRef":
        raise StatementError("a voiding statement targets a StatementRef", path)


def validate_statements(body: Any, *, version: str = "1.0.3") -> list[dict[str, Any]]:
    """One statement or a list of them, each validated; a list of dicts."""
    items = body if isinstance(body, list) else [body]
    if isinstance(body, list) and not body:
        raise StatementError("an empty list", "statements")
    for i, item in enumerate(items):
        where = f"statements[{i}]" if isinstance(body, list) else "statement"
        validate_statement(item, version=version, path=where)
    return [dict(item) for item in items]


def prepare_statement(
    statement: Mapping[str, Any],
    *,
    stored: dt.datetime,
    authority: dict[str, Any],
    version: str,
) -> dict[str, Any]:
    """The statement as stored: id, timestamp, stored, authority, version filled."""
    out = copy.deepcopy(dict(statement))
    stamp = stored.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    out["id"] = str(out.get("id") or uuid.uuid4()).lower()
    out.setdefault("timestamp", stamp)
    out["stored"] = stamp
    out["authority"] = authority
    out.setdefault("version", "1.0.0" if version.startswith("1.") else version)
    return out


_IGNORED = ("id", "stored", "authority", "version", "timestamp", "attachments")


def same_statement(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two statements are the same by the spec's comparison (a subset)."""

    def core(s: Mapping[str, Any]) -> str:
        return json.dumps(
            {k: v for k, v in s.items() if k not in _IGNORED}, sort_keys=True
        )

    return core(a) == core(b)


def parse_agent_param(text: str) -> dict[str, Any]:
    """The ``agent`` query parameter: a JSON Agent (or identified Group)."""
    try:
        agent = json.loads(text)
    except ValueError:
        raise StatementError("is not JSON", "agent") from None
    validate_agent(agent, "agent")
    if agent_ifi(agent) is None:
        raise StatementError("needs an identifier", "agent")
    return dict(agent)


def agent_ifi(agent: Any) -> str | None:
    """The canonical identifier key of an Agent or identified Group; None if none."""
    if not isinstance(agent, Mapping):
        return None
    for key in ("mbox", "mbox_sha1sum", "openid"):
        if isinstance(agent.get(key), str):
            return f"{key}:{agent[key]}"
    account = agent.get("account")
    if isinstance(account, Mapping):
        return f"account:{account.get('homePage')}|{account.get('name')}"
    return None


def _agents_of(agent: Any) -> set[str]:
    found = set()
    if isinstance(agent, Mapping):
        if (ifi := agent_ifi(agent)) is not None:
            found.add(ifi)
        for member in agent.get("member") or []:
            if (ifi := agent_ifi(member)) is not None:
                found.add(ifi)
    return found


def statement_agents(stmt: Mapping[str, Any], *, related: bool) -> set[str]:
    """IFI keys of the actor and agent object (related: authority, context, sub)."""
    found = _agents_of(stmt.get("actor"))
    obj = stmt.get("object")
    if isinstance(obj, Mapping) and obj.get("objectType") in ("Agent", "Group"):
        found |= _agents_of(obj)
    if related:
        found |= _agents_of(stmt.get("authority"))
        context = stmt.get("context")
        if isinstance(context, Mapping):
            found |= _agents_of(context.get("instructor"))
            found |= _agents_of(context.get("team"))
        if isinstance(obj, Mapping) and obj.get("objectType") == "SubStatement":
            found |= statement_agents(obj, related=True)
    return found


def statement_activities(stmt: Mapping[str, Any], *, related: bool) -> set[str]:
    """Ids of the object activity (related: context activities, sub-statement)."""
    found = set()
    obj = stmt.get("object")
    if isinstance(obj, Mapping) and obj.get("objectType", "Activity") == "Activity":
        found.add(str(obj.get("id")))
    if related:
        context = stmt.get("context")
        activities = (
            context.get("contextActivities") if isinstance(context, Mapping) else None
        )
        if isinstance(activities, Mapping):
            for value in activities.values():
                for act in value if isinstance(value, list) else [value]:
                    if isinstance(act, Mapping) and isinstance(act.get("id"), str):
                        found.add(act["id"])
        if isinstance(obj, Mapping) and obj.get("objectType") == "SubStatement":
            found |= statement_activities(obj, related=True)
    return found


def statement_registration(stmt: Mapping[str, Any]) -> str | None:
    """The context registration, lower case; None without one."""
    context = stmt.get("context")
    if isinstance(context, Mapping) and isinstance(context.get("registration"), str):
        return str(context["registration"]).lower()
    return None


def format_statement(
    stmt: Mapping[str, Any], fmt: str, languages: list[str]
) -> dict[str, Any]:
    """The statement in ``fmt`` (exact, ids, canonical; a subset of the rules)."""
    out = copy.deepcopy(dict(stmt))
    if fmt == "ids":
        for key in ("actor", "authority"):
            if isinstance(out.get(key), Mapping) and (ifi := _id_only(out[key])):
                out[key] = ifi
        out["verb"] = {"id": out["verb"]["id"]}
        obj = out.get("object")
        if isinstance(obj, Mapping) and obj.get("objectType", "Activity") == "Activity":
            out["object"] = {"objectType": "Activity", "id": obj["id"]}
    elif fmt == "canonical" and languages:
        _pick_languages(out, languages)
    return out


def _id_only(agent: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: agent[k] for k in _IFIS if k in agent}
    kept["objectType"] = agent.get("objectType", "Agent")
    if "member" in agent and not any(k in agent for k in _IFIS):
        kept["member"] = [_id_only(m) for m in agent["member"]]
    return kept


def _pick_languages(node: Any, languages: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("display", "name", "description") and isinstance(value, dict):
                chosen = next((lang for lang in languages if lang in value), None)
                if chosen is not None:
                    node[key] = {chosen: value[chosen]}
            else:
                _pick_languages(value, languages)
    elif isinstance(node, list):
        for item in node:
            _pick_languages(item, languages)
