"""The xAPI specification as code (``learntrack.producers.xapi_spec``), no servers.

Every rule of the statement data model has one parametrized case: :data:`REFUSED`
(an invalid variant of a valid statement, refused with a reason and a path) and
:data:`ACCEPTED` (a valid variant that must never be refused). Each case quotes the
requirement it proves and its section of the specification (ADL xAPI 1.0.3 Data
"D" / Communication "C"; IEEE 9274.1.1 "2.0"); :data:`REQUIREMENTS` maps every test
id of this module to its requirement, for the MUST table of ``docs/xapi.md``.
The valid statements come from ``tests/data/xapi_spec_examples.json``: the shapes
of the specification's own examples, re-authored.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from learntrack.errors import LearnTrackError
from learntrack.producers.xapi_spec import (
    FORMATS,
    REASONS,
    SUPPORTED_VERSIONS,
    StatementError,
    agent_ifi,
    format_statement,
    is_duration,
    is_iri,
    is_language_tag,
    parse_accept_language,
    parse_agent_param,
    parse_iri,
    parse_json,
    parse_timestamp,
    parse_uuid,
    parse_version_header,
    person_object,
    prepare_statement,
    same_statement,
    statement_activities,
    statement_agents,
    statement_registration,
    statement_version,
    validate_statement,
    validate_statements,
    voided_statement_id,
)

EXAMPLES = json.loads(
    (Path(__file__).resolve().parent / "data" / "xapi_spec_examples.json").read_text()
)
DELETE = object()  # a change that removes the property
NOW = dt.datetime(2026, 12, 6, 16, 0, 0, 123456, tzinfo=dt.UTC)
WRITER = {
    "objectType": "Agent",
    "account": {"homePage": "https://lrs.example", "name": "w"},
}


def _quiz(interaction_type: str) -> dict[str, Any]:
    return {
        "actor": {"mbox": "mailto:ana.diaz@uni.example"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {
            "id": f"https://learntrack.example/quiz/q-{interaction_type}",
            "definition": EXAMPLES["interactions"][interaction_type],
        },
        "result": {"response": "true", "success": True},
    }


#: The valid statements the cases change.
BASES: dict[str, dict[str, Any]] = {
    **EXAMPLES["statements"],
    **{f"v2:{k}": v for k, v in EXAMPLES["v2"].items()},
    **{f"quiz:{k}": _quiz(k) for k in EXAMPLES["interactions"]},
}


def base(name: str) -> dict[str, Any]:
    return copy.deepcopy(BASES[name])


def changed(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Base ``name`` with each dotted path set (``DELETE`` removes; digits index)."""
    doc = base(name)
    for dotted, value in changes.items():
        parts: list[Any] = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        target: Any = doc
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = copy.deepcopy(value)
    return doc


@dataclass(frozen=True)
class Rule:
    """One requirement, proven by changing one valid statement."""

    id: str
    section: str
    must: str
    base: str
    changes: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # refused cases: the expected StatementError.reason
    path: str = ""  # ... and StatementError.path
    version: str = "1.0.3"


def refused(  # noqa: PLR0917 - one table row, positional
    id_: str,
    section: str,
    must: str,
    base_: str,
    changes: dict[str, Any],
    reason: str,
    path: str,
    version: str = "1.0.3",
) -> Rule:
    return Rule(id_, section, must, base_, changes, reason, path, version)


def accepted(  # noqa: PLR0917 - one table row, positional
    id_: str,
    section: str,
    must: str,
    base_: str,
    changes: dict[str, Any],
    version: str = "1.0.3",
) -> Rule:
    return Rule(id_, section, must, base_, changes, version=version)


LONG = "long_example_as_returned"
S = "statement"
SIG = "signed"
ATT = "multipart_attachment"
SUB = "substatement_planned"
ANON = "anonymous_group_actor"
AUTH = "authority_three_legged_oauth"
V2 = "v2:context_agents_and_groups"
CHOICE = "quiz:choice"
TF = "quiz:true-false"
ATTEMPT = "attempted_with_duration_in_seconds"
AS_AGENT = "agent_as_object"
REF = "comment_on_statement_ref"

#: Invalid statements the LRS MUST refuse (400), one case per rule.
# fmt: off
REFUSED: list[Rule] = [
    # -- Data 2.2 formatting requirements
    refused("null-value", "D 2.2.s4.b1.b1", "reject statements with any null values (except inside extensions)", LONG, {"context.platform": None}, "null_value", f"{S}.context.platform"),  # noqa: E501
    refused("null-in-language-map", "D 2.2.s4.b1.b1", "reject null values (a language map entry)", LONG, {"verb.display.en-US": None}, "null_value", f"{S}.verb.display.en-US"),  # noqa: E501
    refused("string-for-number", "D 2.2.s4.b1.b2", "reject strings where numbers are required, even if they contain numbers", ATTEMPT, {"result.score.max": "100"}, "bad_type", f"{S}.result.score.max"),  # noqa: E501
    refused("string-for-boolean", "D 2.2.s4.b1.b3", "reject strings where booleans are required, even if they contain booleans", ATTEMPT, {"result.completion": "false"}, "bad_type", f"{S}.result.completion"),  # noqa: E501
    refused("empty-string-iri", "D 2.2.s4.b1.b4", "reject any non-format-following value, including the empty string, where an IRI is required", LONG, {"verb.id": ""}, "bad_iri", f"{S}.verb.id"),  # noqa: E501
    refused("key-case", "D 2.2.s4.b1.b5", "reject statements where the case of a key does not match the specification", LONG, {"Actor": {"mbox": "mailto:a@b.example"}}, "unknown_property", f"{S}.Actor"),  # noqa: E501
    refused("enum-case", "D 2.2.s4.b1.b6", "reject where an enumerated value's case does not match exactly (interactionType)", TF, {"object.definition.interactionType": "true-faLse"}, "bad_object", f"{S}.object.definition.interactionType"),  # noqa: E501
    refused("unknown-property", "D 2.2.s4.b1.b7", "reject where a key or value is not allowed by the specification", LONG, {"result.grade": "A"}, "unknown_property", f"{S}.result.grade"),  # noqa: E501
    refused("iri-without-scheme", "D 2.2.s4.b1.b8", "reject IRL or IRI values without a scheme", LONG, {"object.id": "should error"}, "bad_iri", f"{S}.object.id"),  # noqa: E501
    refused("iri-bad-scheme", "D 2.2.s4.b1.b4", "reject non-format-following IRIs (a scheme with '=')", LONG, {"object.id": "ab=c://should.fail.com"}, "bad_iri", f"{S}.object.id"),  # noqa: E501
    refused("iri-with-space", "D 2.2.s3.b1 / 4.3", "values requiring IRIs MUST be valid IRIs (no whitespace)", LONG, {"verb.id": "http://example.com/my verb"}, "bad_iri", f"{S}.verb.id"),  # noqa: E501
    refused("language-tag-two-regions", "D 2.2.s4.b2", "validate the sequence of token lengths of language map keys (RFC 5646): de-419-DE", LONG, {"verb.display": {"de-419-DE": "besucht"}}, "bad_language_map", f"{S}.verb.display.de-419-DE"),  # noqa: E501
    refused("language-tag-singleton-first", "D 2.2.s4.b2", "RFC 5646 tags: a-DE is not well-formed", LONG, {"object.definition.name": {"a-DE": "x"}}, "bad_language_map", f"{S}.object.definition.name.a-DE"),  # noqa: E501
    refused("language-tag-repeated-singleton", "D 2.2.s4.b2", "RFC 5646 tags: ar-a-aaa-b-bbb-a-ccc repeats a singleton", LONG, {"object.definition.description": {"ar-a-aaa-b-bbb-a-ccc": "x"}}, "bad_language_map", f"{S}.object.definition.description.ar-a-aaa-b-bbb-a-ccc"),  # noqa: E501
    refused("language-map-empty", "D 4.2", "a language map has at least one entry (ADL conformance suite)", LONG, {"verb.display": {}}, "bad_language_map", f"{S}.verb.display"),  # noqa: E501
    refused("language-map-not-object", "D 4.2", "a language map is an object of tag -> string", LONG, {"object.definition.name": "should error"}, "bad_language_map", f"{S}.object.definition.name"),  # noqa: E501
    refused("language-map-number-value", "D 4.2", "language map values are strings", LONG, {"verb.display.en-US": 5}, "bad_language_map", f"{S}.verb.display.en-US"),  # noqa: E501
    refused("missing-actor", "D 2.2.s2.b3", "a statement MUST use actor", "simplest", {"actor": DELETE}, "missing_field", f"{S}.actor"),  # noqa: E501
    refused("missing-verb", "D 2.2.s2.b3", "a statement MUST use verb", "simplest", {"verb": DELETE}, "missing_field", f"{S}.verb"),  # noqa: E501
    refused("missing-object", "D 2.2.s2.b3", "a statement MUST use object", "simplest", {"object": DELETE}, "missing_field", f"{S}.object"),  # noqa: E501
    # -- Data 2.4.1 id, 4.4 UUIDs
    refused("id-too-many-digits", "D 2.4.1 / 4.4", "UUIDs MUST be in standard string form", "simplest", {"id": "AA97B177-9383-4934-8543-0F91A7A028368"}, "bad_uuid", f"{S}.id"),  # noqa: E501
    refused("id-non-hex", "D 2.4.1 / 4.4", "UUIDs MUST be in standard string form (hex digits)", "simplest", {"id": "MA97B177-9383-4934-8543-0F91A7A02836"}, "bad_uuid", f"{S}.id"),  # noqa: E501
    refused("id-number", "D 2.4.1", "the id is a UUID string", "simplest", {"id": 12345}, "bad_type", f"{S}.id"),  # noqa: E501
    # -- Data 2.4.2 actor
    refused("agent-no-ifi", "D 2.4.2.1.s2.b1", "an Agent MUST be identified by one of the four IFIs", LONG, {"context.instructor": {"name": "No IFI"}}, "bad_actor", f"{S}.context.instructor"),  # noqa: E501
    refused("agent-two-ifis", "D 2.4.2.1.s2.b2", "an Agent MUST NOT include more than one IFI", "simplest", {"actor.openid": "https://ana.openid.example/"}, "bad_actor", f"{S}.actor"),  # noqa: E501
    refused("mbox-not-mailto", "D 2.4.2.3", "mbox is a mailto IRI", "simplest", {"actor.mbox": "http://should.fail.com"}, "bad_actor", f"{S}.actor.mbox"),  # noqa: E501
    refused("mbox-no-address", "D 2.4.2.3", "mbox has the form mailto:email address", "simplest", {"actor.mbox": "mailto:should.fail.com"}, "bad_actor", f"{S}.actor.mbox"),  # noqa: E501
    refused("mbox-sha1sum-not-hex", "D 2.4.2.3", "mbox_sha1sum is the hex SHA1 of a mailto IRI", LONG, {"actor.member.2.mbox_sha1sum": "not-a-sha1"}, "bad_actor", f"{S}.actor.member[2].mbox_sha1sum"),  # noqa: E501
    refused("mbox-sha1sum-not-string", "D 2.4.2.3", "mbox_sha1sum is a string", LONG, {"actor.member.2.mbox_sha1sum": {"key": "value"}}, "bad_type", f"{S}.actor.member[2].mbox_sha1sum"),  # noqa: E501
    refused("openid-not-uri", "D 2.4.2.3", "openid is a URI", LONG, {"actor.member.1.openid": "ab=c://should.fail.com"}, "bad_iri", f"{S}.actor.member[1].openid"),  # noqa: E501
    refused("account-no-name", "D 2.4.2.4", "an account has homePage and name (required)", LONG, {"actor.member.0.account.name": DELETE}, "missing_field", f"{S}.actor.member[0].account.name"),  # noqa: E501
    refused("account-homepage-not-irl", "D 2.4.2.4", "account homePage is an IRL", LONG, {"context.instructor.account.homePage": "ab=c://should.fail.com"}, "bad_iri", f"{S}.context.instructor.account.homePage"),  # noqa: E501
    refused("account-name-not-string", "D 2.4.2.4", "account name is a string", LONG, {"authority.account.name": {"key": "should fail"}}, "bad_type", f"{S}.authority.account.name"),  # noqa: E501
    refused("actor-object-type", "D 2.4.2 / 2.2.s4.b1.b6", "an actor's objectType is Agent or Group, exact case", "simplest", {"actor.objectType": "agent"}, "bad_actor", f"{S}.actor.objectType"),  # noqa: E501
    refused("agent-name-not-string", "D 2.4.2.1", "an Agent's name is a string", "simple_with_timestamp", {"actor.name": 123}, "bad_type", f"{S}.actor.name"),  # noqa: E501
    refused("anonymous-group-no-member", "D 2.4.2.2.s4.b1", "an Anonymous Group MUST include a member property", ANON, {"actor.member": DELETE}, "missing_field", f"{S}.actor.member"),  # noqa: E501
    refused("group-member-is-group", "D 2.4.2.2.s4.b2 / s5.b2", "a Group MUST NOT contain Group objects in member", ANON, {"actor.member.0": {"objectType": "Group", "mbox": "mailto:g@uni.example"}}, "bad_actor", f"{S}.actor.member[0].objectType"),  # noqa: E501
    refused("identified-group-two-ifis", "D 2.4.2.2.s5.b1", "an Identified Group MUST include exactly one IFI", LONG, {"actor.openid": "https://team.openid.example/"}, "bad_actor", f"{S}.actor"),  # noqa: E501
    refused("group-without-object-type", "D 2.4.2.2", "a Group's objectType is required (without it, member is no Agent property)", LONG, {"actor.objectType": DELETE}, "unknown_property", f"{S}.actor.member"),  # noqa: E501
    # -- Data 2.4.3 verb
    refused("verb-no-id", "D 2.4.3", "a Verb's id is required", LONG, {"verb.id": DELETE}, "missing_field", f"{S}.verb.id"),  # noqa: E501
    refused("verb-id-not-iri", "D 2.4.3", "a Verb's id is an IRI", LONG, {"verb.id": "attended"}, "bad_iri", f"{S}.verb.id"),  # noqa: E501
    # -- Data 2.4.4 object
    refused("object-type-case", "D 2.4.4 / 2.2.s4.b1.b6", "objectType is Activity, Agent, Group, SubStatement or StatementRef, exact case", LONG, {"object.objectType": "activity"}, "bad_object", f"{S}.object.objectType"),  # noqa: E501
    refused("activity-no-id", "D 2.4.4.1", "an Activity's id is required", LONG, {"object.id": DELETE}, "missing_field", f"{S}.object.id"),  # noqa: E501
    refused("definition-not-object", "D 2.4.4.1", "an Activity's definition is an object", LONG, {"object.definition": "should error"}, "bad_type", f"{S}.object.definition"),  # noqa: E501
    refused("definition-type-not-iri", "D 2.4.4.1", "an Activity Definition's type is an IRI", LONG, {"object.definition.type": "should error"}, "bad_iri", f"{S}.object.definition.type"),  # noqa: E501
    refused("definition-more-info-not-irl", "D 2.4.4.1", "an Activity Definition's moreInfo is an IRL", LONG, {"object.definition.moreInfo": "should error"}, "bad_iri", f"{S}.object.definition.moreInfo"),  # noqa: E501
    refused("interaction-type-unknown", "D 2.4.4.1.s13.b1", "Interaction Activities MUST have a valid interactionType", TF, {"object.definition.interactionType": "essay"}, "bad_object", f"{S}.object.definition.interactionType"),  # noqa: E501
    refused("interaction-without-type", "D 2.4.4.1.s13.b1", "Interaction Activities MUST have a valid interactionType (component lists without one)", CHOICE, {"object.definition.interactionType": DELETE}, "bad_object", f"{S}.object.definition.interactionType"),  # noqa: E501
    refused("correct-responses-not-strings", "D 2.4.4.1.s8", "correctResponsesPattern is an array of strings", TF, {"object.definition.correctResponsesPattern": [True]}, "bad_type", f"{S}.object.definition.correctResponsesPattern[0]"),  # noqa: E501
    refused("component-ids-distinct", "D 2.4.4.1.s16.b1", "within an array of interaction components, all id values MUST be distinct", CHOICE, {"object.definition.choices.1.id": "mongo"}, "bad_object", f"{S}.object.definition.choices[1].id"),  # noqa: E501
    refused("component-no-id", "D 2.4.4.1.s15", "an interaction component's id is required", CHOICE, {"object.definition.choices.0.id": DELETE}, "missing_field", f"{S}.object.definition.choices[0].id"),  # noqa: E501
    refused("agent-object-without-type", "D 2.4.4.2.s1.b1", "an Agent or Group as object MUST specify objectType", AS_AGENT, {"object.objectType": DELETE}, "bad_object", f"{S}.object.objectType"),  # noqa: E501
    refused("statement-ref-bad-uuid", "D 2.4.4.3.s4.b2", "a Statement Reference's id is the UUID of a statement", REF, {"object.id": "MA97B177-9383-4934-8543-0F91A7A02836"}, "bad_uuid", f"{S}.object.id"),  # noqa: E501
    refused("statement-ref-extra", "D 2.4.4.3.s4", "a Statement Reference has objectType and id only", REF, {"object.definition": {}}, "unknown_property", f"{S}.object.definition"),  # noqa: E501
    refused("substatement-id", "D 2.4.4.3.s8.b3", "a SubStatement MUST NOT have id", SUB, {"object.id": "0b5e8f3a-6c1d-4e2f-9a7b-1c2d3e4f5a6b"}, "bad_substatement", f"{S}.object.id"),  # noqa: E501
    refused("substatement-stored", "D 2.4.4.3.s8.b3", "a SubStatement MUST NOT have stored", SUB, {"object.stored": "2026-01-01T00:00:00Z"}, "bad_substatement", f"{S}.object.stored"),  # noqa: E501
    refused("substatement-version", "D 2.4.4.3.s8.b3", "a SubStatement MUST NOT have version", SUB, {"object.version": "1.0.0"}, "bad_substatement", f"{S}.object.version"),  # noqa: E501
    refused("substatement-authority", "D 2.4.4.3.s8.b3", "a SubStatement MUST NOT have authority", SUB, {"object.authority": {"mbox": "mailto:a@uni.example"}}, "bad_substatement", f"{S}.object.authority"),  # noqa: E501
    refused("substatement-nested", "D 2.4.4.3.s8.b4", "a SubStatement MUST NOT contain a SubStatement", SUB, {"object.object": BASES[SUB]["object"]}, "bad_substatement", f"{S}.object.object.objectType"),  # noqa: E501
    refused("substatement-validated-as-statement", "D 2.4.4.3.s8.b2", "a SubStatement MUST be validated as a Statement (verb required)", SUB, {"object.verb": DELETE}, "missing_field", f"{S}.object.verb"),  # noqa: E501
    refused("substatement-timestamp", "D 2.4.4.3.s8.b2 / 4.5", "a SubStatement's timestamp follows the Timestamp rules", SUB, {"object.timestamp": "2008-09-15T15:53:00.601-00:00"}, "bad_timestamp", f"{S}.object.timestamp"),  # noqa: E501
    # -- Data 2.4.5 result
    refused("score-not-object", "D 2.4.5.1", "score is an object", ATTEMPT, {"result.score": 12345}, "bad_type", f"{S}.result.score"),  # noqa: E501
    refused("scaled-above-1", "D 2.4.5.1", "scaled is a decimal number between -1 and 1, inclusive", ATTEMPT, {"result.score.scaled": 1.01}, "bad_result", f"{S}.result.score.scaled"),  # noqa: E501
    refused("scaled-below-minus-1", "D 2.4.5.1", "scaled is between -1 and 1, inclusive", ATTEMPT, {"result.score.scaled": -1.00001}, "bad_result", f"{S}.result.score.scaled"),  # noqa: E501
    refused("raw-above-max", "D 2.4.5.1", "raw is between min and max (if present), inclusive", ATTEMPT, {"result.score": {"raw": 0.6767676, "max": 0.6567676}}, "bad_result", f"{S}.result.score.raw"),  # noqa: E501
    refused("raw-below-min", "D 2.4.5.1", "raw is between min and max (if present), inclusive", ATTEMPT, {"result.score": {"raw": 0.6767676, "min": 1.4067676}}, "bad_result", f"{S}.result.score.raw"),  # noqa: E501
    refused("min-above-max", "D 2.4.5.1", "min is less than max", ATTEMPT, {"result.score": {"min": 0.6767676, "max": 0.6767355}}, "bad_result", f"{S}.result.score.min"),  # noqa: E501
    refused("success-not-boolean", "D 2.4.5", "success is a boolean", ATTEMPT, {"result.success": "We regret to inform you"}, "bad_type", f"{S}.result.success"),  # noqa: E501
    refused("response-not-string", "D 2.4.5", "response is a string", ATTEMPT, {"result.response": 42}, "bad_type", f"{S}.result.response"),  # noqa: E501
    refused("duration-invalid", "D 4.6.s1.b1", "a Duration MUST be expressed using the ISO 8601 format", ATTEMPT, {"result.duration": "PA1H0M0S"}, "bad_duration", f"{S}.result.duration"),  # noqa: E501
    refused("duration-weeks-combined", "D 4.6", "weeks cannot be combined with other time periods (P4W1D)", ATTEMPT, {"result.duration": "P4W1D"}, "bad_duration", f"{S}.result.duration"),  # noqa: E501
    refused("duration-number", "D 2.4.5", "duration is an ISO 8601 string", ATTEMPT, {"result.duration": 12345}, "bad_type", f"{S}.result.duration"),  # noqa: E501
    refused("result-extension-key", "D 4.1.s3.b1", "the keys of an extensions map MUST be IRIs", LONG, {"result.extensions": {"minutes": "x"}}, "bad_extension", f"{S}.result.extensions.minutes"),  # noqa: E501
    # -- Data 2.4.6 context
    refused("registration-not-uuid", "D 2.4.6", "registration is a UUID", LONG, {"context.registration": "AA97B177-9383-4934-8543-0F91A7A028368"}, "bad_uuid", f"{S}.context.registration"),  # noqa: E501
    refused("team-not-group", "D 2.4.6", "team is a Group (objectType Group required)", LONG, {"context.team.objectType": DELETE}, "missing_field", f"{S}.context.team.objectType"),  # noqa: E501
    refused("context-activities-key", "D 2.4.6.2.s4.b1", "every key in contextActivities MUST be parent, grouping, category or other", LONG, {"context.contextActivities.parents": [{"id": "https://learntrack.example/p"}]}, "unknown_property", f"{S}.context.contextActivities.parents"),  # noqa: E501
    refused("context-activities-empty", "D 2.4.6.2 (conformance)", "a contextActivities object has at least one entry (ADL conformance suite)", LONG, {"context.contextActivities": {}}, "bad_context", f"{S}.context.contextActivities"),  # noqa: E501
    refused("context-activities-value", "D 2.4.6.2.s4.b2", "every contextActivities value MUST be an Activity or an array of Activities", LONG, {"context.contextActivities.parent": "https://learntrack.example/p"}, "bad_context", f"{S}.context.contextActivities.parent"),  # noqa: E501
    refused("context-activity-no-id", "D 2.4.6.2.s4.b2", "each context Activity is a valid Activity (id required)", LONG, {"context.contextActivities.other.1.id": DELETE}, "missing_field", f"{S}.context.contextActivities.other[1].id"),  # noqa: E501
    refused("revision-not-activity", "D 2.4.6.s4.b1", "revision MUST only be used if the object is an Activity", AS_AGENT, {"context.revision": "2"}, "bad_context", f"{S}.context.revision"),  # noqa: E501
    refused("platform-not-activity", "D 2.4.6.s4.b2", "platform MUST only be used if the object is an Activity", REF, {"context": {"platform": "web"}}, "bad_context", f"{S}.context.platform"),  # noqa: E501
    refused("context-statement-not-ref", "D 2.4.6", "context statement is a Statement Reference", LONG, {"context.statement.objectType": "Activity"}, "bad_context", f"{S}.context.statement.objectType"),  # noqa: E501
    refused("context-language-empty", "D 2.2.s4.b1.b4", "no empty string where a language tag is required", LONG, {"context.language": ""}, "bad_context", f"{S}.context.language"),  # noqa: E501
    refused("context-extensions-not-object", "D 4.1", "extensions is a map (object)", LONG, {"context.extensions": "should error"}, "bad_extension", f"{S}.context.extensions"),  # noqa: E501
    refused("context-agents-in-1.0", "D 2.4.6 (1.0.3)", "contextAgents is not a 1.0.3 context property", V2, {"version": DELETE}, "unknown_property", f"{S}.context.contextAgents"),  # noqa: E501
    refused("context-agent-object-type", "2.0 Data 2.4.6", "a contextAgent has objectType 'contextAgent'", V2, {"context.contextAgents.0.objectType": "Should fail"}, "bad_context", f"{S}.context.contextAgents[0].objectType", "2.0.0"),  # noqa: E501
    refused("context-agent-invalid-agent", "2.0 Data 2.4.6", "a contextAgent's agent is a valid Agent", V2, {"context.contextAgents.0.agent": {"key": "Should fail"}}, "unknown_property", f"{S}.context.contextAgents[0].agent.key", "2.0.0"),  # noqa: E501
    refused("context-agent-relevant-types-empty", "2.0 Data 2.4.6", "relevantTypes, when present, is a non-empty array", V2, {"context.contextAgents.0.relevantTypes": []}, "bad_context", f"{S}.context.contextAgents[0].relevantTypes", "2.0.0"),  # noqa: E501
    refused("context-agent-relevant-types-iri", "2.0 Data 2.4.6", "relevantTypes are IRIs", V2, {"context.contextAgents.0.relevantTypes": ["abc"]}, "bad_iri", f"{S}.context.contextAgents[0].relevantTypes[0]", "2.0.0"),  # noqa: E501
    refused("context-group-is-agent", "2.0 Data 2.4.6", "a contextGroup's group is a valid Group", V2, {"context.contextGroups.0.group.objectType": DELETE}, "missing_field", f"{S}.context.contextGroups[0].group.objectType", "2.0.0"),  # noqa: E501
    # -- Data 2.4.7 / 2.4.8 timestamp, stored; 4.5 timestamps
    refused("timestamp-string", "D 4.5.s1.b1", "a Timestamp MUST be formatted according to ISO 8601", "simplest", {"timestamp": "should fail"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-date", "D 4.5.s1.b1", "a Timestamp MUST be ISO 8601 (not a local date format)", "simplest", {"timestamp": "01/011/2015"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-minus-00", "D 4.5 (conformance)", "refuse a timestamp with a -00 offset", "simplest", {"timestamp": "2008-09-15T15:53:00.601-00"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-minus-0000", "D 4.5 (conformance)", "refuse a timestamp with a -0000 offset", "simplest", {"timestamp": "2008-09-15T15:53:00.601-0000"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-minus-00-00", "D 4.5 (conformance)", "refuse a timestamp with a -00:00 offset", "simplest", {"timestamp": "2008-09-15T15:53:00.601-00:00"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-impossible-date", "D 4.5.s1.b1", "a Timestamp is a real date and time", "simplest", {"timestamp": "2026-02-30T10:00:00Z"}, "bad_timestamp", f"{S}.timestamp"),  # noqa: E501
    refused("timestamp-no-offset-2.0", "2.0 Data 4.5", "a 2.0 Timestamp includes its time zone offset (RFC 3339)", V2, {"timestamp": "2026-11-30T18:00:00"}, "bad_timestamp", f"{S}.timestamp", "2.0.0"),  # noqa: E501
    refused("stored-invalid", "D 2.4.8.s3.b2", "the LRS SHOULD validate stored (then MUST overwrite it)", LONG, {"stored": "yesterday"}, "bad_timestamp", f"{S}.stored"),  # noqa: E501
    # -- Data 2.4.9 authority
    refused("authority-identified-group", "D 2.4.9.s3.b1", "authority MUST be an Agent, or a Group of two Agents (3-legged OAuth): no identified Group", AUTH, {"authority.openid": "http://openid.example.org/12345"}, "bad_actor", f"{S}.authority"),  # noqa: E501
    refused("authority-group-one-member", "D 2.4.9.s3.b1", "an authority Group has exactly two Agents (one is refused)", AUTH, {"authority.member": [{"mbox": "mailto:bob@uni.example"}]}, "bad_actor", f"{S}.authority"),  # noqa: E501
    refused("authority-bad-agent", "D 2.4.9 / 2.4.2.3", "authority is a valid Agent", LONG, {"authority": {"mbox": "mailto:should.fail.com"}}, "bad_actor", f"{S}.authority.mbox"),  # noqa: E501
    # -- Data 2.4.10 version
    refused("version-1.1.0", "D 2.4.10.s3.b2", "reject statements with a version not starting with 1.0.", LONG, {"version": "1.1.0"}, "bad_version", f"{S}.version"),  # noqa: E501
    refused("version-0.9.9", "D 2.4.10.s3.b2", "reject statements with a version not starting with 1.0. (0.9.9)", LONG, {"version": "0.9.9"}, "bad_version", f"{S}.version"),  # noqa: E501
    refused("version-string", "D 2.4.10.s2.b1", "version is formatted as the version header (semantic version)", LONG, {"version": "should fail"}, "bad_version", f"{S}.version"),  # noqa: E501
    refused("version-2.0-in-1.0.3", "D 2.4.10.s3.b2", "a 1.0.3 request's statement version starts with 1.0.", LONG, {"version": "2.0.0"}, "bad_version", f"{S}.version"),  # noqa: E501
    # -- Data 2.4.11 attachments, 2.6 signed statements
    refused("attachments-not-array", "D 2.4.11", "attachments is an ordered array of Attachment objects", ATT, {"attachments": {"usageType": "x"}}, "bad_type", f"{S}.attachments"),  # noqa: E501
    refused("attachment-no-usage-type", "D 2.4.11", "an Attachment's usageType is required", ATT, {"attachments.0.usageType": DELETE}, "missing_field", f"{S}.attachments[0].usageType"),  # noqa: E501
    refused("attachment-no-display", "D 2.4.11", "an Attachment's display is required", ATT, {"attachments.0.display": DELETE}, "missing_field", f"{S}.attachments[0].display"),  # noqa: E501
    refused("attachment-no-content-type", "D 2.4.11", "an Attachment's contentType is required", ATT, {"attachments.0.contentType": DELETE}, "missing_field", f"{S}.attachments[0].contentType"),  # noqa: E501
    refused("attachment-no-length", "D 2.4.11", "an Attachment's length is required", ATT, {"attachments.0.length": DELETE}, "missing_field", f"{S}.attachments[0].length"),  # noqa: E501
    refused("attachment-no-sha2", "D 2.4.11", "an Attachment's sha2 is required (even with fileUrl)", ATT, {"attachments.0.sha2": DELETE}, "missing_field", f"{S}.attachments[0].sha2"),  # noqa: E501
    refused("attachment-usage-type-not-iri", "D 2.4.11", "usageType is an IRI", ATT, {"attachments.0.usageType": "test"}, "bad_iri", f"{S}.attachments[0].usageType"),  # noqa: E501
    refused("attachment-length-string", "D 2.4.11", "length is an integer", ATT, {"attachments.0.length": "27"}, "bad_type", f"{S}.attachments[0].length"),  # noqa: E501
    refused("attachment-length-fraction", "D 2.4.11", "length is an integer number of octets", ATT, {"attachments.0.length": 27.5}, "bad_attachment", f"{S}.attachments[0].length"),  # noqa: E501
    refused("attachment-length-negative", "D 2.4.11", "length is a number of octets (not negative)", ATT, {"attachments.0.length": -1}, "bad_attachment", f"{S}.attachments[0].length"),  # noqa: E501
    refused("attachment-content-type", "D 2.4.11", "contentType is an Internet Media Type", ATT, {"attachments.0.contentType": "should error"}, "bad_attachment", f"{S}.attachments[0].contentType"),  # noqa: E501
    refused("attachment-sha2-not-hex", "D 2.4.11", "sha2 is the (hex) SHA-2 of the attachment data", ATT, {"attachments.0.sha2": "not hex!"}, "bad_attachment", f"{S}.attachments[0].sha2"),  # noqa: E501
    refused("attachment-sha2-too-short", "D 2.4.11", "sha2 is a whole SHA-2 digest (224, 256, 384 or 512 bits)", ATT, {"attachments.0.sha2": "ab"}, "bad_attachment", f"{S}.attachments[0].sha2"),  # noqa: E501
    refused("attachment-file-url", "D 2.4.11", "fileUrl is an IRL", ATT, {"attachments.0.fileUrl": "file.txt"}, "bad_iri", f"{S}.attachments[0].fileUrl"),  # noqa: E501
    refused("attachment-display-empty", "D 2.4.11 / 4.2", "display is a language map (with an entry)", ATT, {"attachments.0.display": {}}, "bad_language_map", f"{S}.attachments[0].display"),  # noqa: E501
    refused("signature-content-type", "D 2.6.s4.b1", "a signature attachment has contentType application/octet-stream", SIG, {"attachments.0.contentType": "text/plain"}, "bad_attachment", f"{S}.attachments[0].contentType"),  # noqa: E501
    # -- Data 4.1 extensions
    refused("definition-extension-key", "D 4.1.s3.b1", "the keys of an extensions map MUST be IRIs", LONG, {"object.definition.extensions": {"id": "valid", "description": {"en-US": "valid"}}}, "bad_extension", f"{S}.object.definition.extensions.id"),  # noqa: E501
    refused("definition-extensions-string", "D 2.4.4.1", "an Activity Definition's extensions is an object", LONG, {"object.definition.extensions": "should error"}, "bad_extension", f"{S}.object.definition.extensions"),  # noqa: E501
    # -- Data 2.3.2 voiding
    refused("voiding-needs-statement-ref", "D 2.3.2.s2.b1", "a voiding statement's object MUST have objectType StatementRef", "voiding", {"object": {"id": "https://learntrack.example/a"}}, "voiding", f"{S}.object"),  # noqa: E501
]
# fmt: on

#: Valid variants the LRS MUST (or by this module's choice, does) accept.
# fmt: off
ACCEPTED: list[Rule] = [
    accepted("extension-value-null", "D 2.2.s4.b1.b1 / 4.1.s3.b2", "nulls are allowed inside extensions; the LRS MUST NOT reject based on extension values", LONG, {"context.extensions": {"https://learntrack.example/null": None}, "result.extensions": {"https://learntrack.example/null": None}, "object.definition.extensions": {"https://learntrack.example/null": None}}),  # noqa: E501
    accepted("version-1.0", "D 2.4.10.s3.b1 / C 3.3.s3.b3", "accept statements whose version is 1.0 or starts with 1.0.", LONG, {"version": "1.0"}),  # noqa: E501
    accepted("version-1.0.9", "D 2.4.10.s3.b1", "accept every 1.0.x statement version", LONG, {"version": "1.0.9"}),  # noqa: E501
    accepted("version-2.0.0-in-2.0", "2.0 Data 2.4.10", "a 2.0 request accepts statement version 2.0.0", LONG, {"version": "2.0.0"}, "2.0.0"),  # noqa: E501
    accepted("version-1.0.x-in-2.0", "2.0 Data 2.4.10", "a 2.0 request accepts statement version 1.0.x", LONG, {"version": "1.0.2"}, "2.0.0"),  # noqa: E501
    accepted("context-agents-in-2.0", "2.0 Data 2.4.6", "contextAgents and contextGroups (relevantTypes optional) are valid in 2.0", V2, {}, "2.0.0"),  # noqa: E501
    accepted("grandfathered-tag", "D 2.2.s4.b2 (conformance)", "i-enochian (grandfathered) is a valid language tag", LONG, {"verb.display": {"i-enochian": "x"}}),  # noqa: E501
    accepted("tags-script-region-variant", "D 2.2.s4.b2 (conformance)", "zh-Hant, sr-Latn-RS, zh-cmn-Hans-CN, sl-rozaj-biske, de-CH-1901, hy-Latn-IT-arevela are valid", LONG, {"verb.display": {t: "x" for t in ("zh-Hant", "sr-Latn-RS", "zh-cmn-Hans-CN", "sl-rozaj-biske", "de-CH-1901", "hy-Latn-IT-arevela", "ine")}}),  # noqa: E501
    accepted("tags-private-use", "D 2.2.s4.b2 (conformance)", "x-whatever and az-Arab-x-AZE-derbend (private use) are valid", LONG, {"object.definition.name": {"x-whatever": "x", "az-Arab-x-AZE-derbend": "y"}}),  # noqa: E501
    accepted("tags-case-insensitive", "RFC 5646 2.1.1", "language tags are case-insensitive", LONG, {"verb.display": {"EN-us": "x", "zh-hant": "y"}}),  # noqa: E501
    accepted("context-language-free", "D 2.4.6 (conformance)", "context.language of 51 characters is stored (conformance suite expects 200)", LONG, {"context.language": "supercalifragilisticexpialidociouswhatabouthhhhhhh1"}),  # noqa: E501
    accepted("timestamp-rfc3339-space", "D 4.5.s1.b2 / 2.0 (conformance)", "RFC 3339 timestamps with a space separator are valid", "simplest", {"timestamp": "2008-09-15 15:53:00.601+00:00"}),  # noqa: E501
    accepted("timestamp-iso-basic", "D 4.5 (XAPI-00123)", "ISO 8601 basic format timestamps are valid", "simplest", {"timestamp": "20080915T155300.601Z"}),  # noqa: E501
    accepted("timestamp-no-offset-1.0", "D 4.5.s1.b4", "a 1.0.x Timestamp SHOULD* include the time zone (not MUST)", "simplest", {"timestamp": "2008-09-15T15:53:00.601"}),  # noqa: E501
    accepted("timestamp-nanoseconds", "D 4.5.s1.b3", "timestamps with more than 3 decimals are accepted", "simplest", {"timestamp": "2008-09-15T15:53:00.123456789+05:30"}),  # noqa: E501
    accepted("timestamp-offset-forms", "D 4.5.s1.b1", "offsets +hh:mm, +hhmm and +hh are ISO 8601", "simplest", {"timestamp": "2008-09-15T15:53:00+0530", "stored": "2008-09-15T15:53:00-05"}),  # noqa: E501
    accepted("timestamp-future", "D 2.4.7.s3.b6", "the LRS SHOULD* NOT reject a timestamp for being in the future", "simplest", {"timestamp": "2999-01-01T00:00:00Z"}),  # noqa: E501
    accepted("stored-given", "D 2.4.8.s3.b2", "a valid stored value is accepted (and overwritten)", "simplest", {"stored": "2026-01-01T00:00:00.000Z"}),  # noqa: E501
    accepted("durations-valid", "D 4.6.s2", "PT1H0M0.1S / PT4H35M59.14S / P3Y1M29DT4H35M59.14S / P3Y / P4W are valid", ATTEMPT, {"result.duration": "P3Y1M29DT4H35M59.14S"}),  # noqa: E501
    accepted("duration-seconds-only", "D 4.6.s2", "P16559.14S (the specification's own example) is accepted", ATTEMPT, {"result.duration": "P16559.14S"}),  # noqa: E501
    accepted("duration-fine-precision", "D 4.6.s1.b4", "the LRS SHOULD* NOT reject a duration with more than 0.01 s precision", ATTEMPT, {"result.duration": "PT0.123456S"}),  # noqa: E501
    accepted("score-bounds-inclusive", "D 2.4.5.1", "scaled -1 and 1, raw equal to min and max are valid (inclusive)", ATTEMPT, {"result.score": {"scaled": -1.0, "raw": 5, "min": 5, "max": 5}}),  # noqa: E501
    accepted("uuid-uppercase", "D 4.4", "a UUID in standard form may use upper-case hex", "simplest", {"id": "AA97B177-9383-4934-8543-0F91A7A02836"}),  # noqa: E501
    accepted("iri-any-scheme-non-ascii", "D 4.3", "IRIs may use any scheme and non-ASCII characters", "non_ascii_and_non_http_iris", {}),  # noqa: E501
    accepted("mbox-upper-case-domain", "D 2.3.1.b7", "an email domain is case-insensitive (any case accepted)", "simplest", {"actor.mbox": "mailto:Ana.Diaz@UNI.Example"}),  # noqa: E501
    accepted("anonymous-group-empty-member", "D 2.4.2.2.s3.b3", "a provider MAY include a partial member list (empty accepted outside authority)", ANON, {"actor.member": []}),  # noqa: E501
    accepted("components-not-matching-type", "D 2.4.4.1.s13.b3", "the LRS MAY (not MUST) refuse component lists that do not fit the interactionType", CHOICE, {"object.definition.scale": [{"id": "s1"}]}),  # noqa: E501
    accepted("correct-responses-empty", "D 2.4.4.1.s11", "an empty correctResponsesPattern means no correct answer", TF, {"object.definition.correctResponsesPattern": []}),  # noqa: E501
    accepted("context-activity-single", "D 2.4.6.2.s4.b2", "a contextActivities value may be a single Activity", LONG, {"context.contextActivities.parent": {"id": "https://learntrack.example/p"}}),  # noqa: E501
    accepted("instructor-group", "D 2.4.6", "instructor is an Agent (MAY be a Group)", LONG, {"context.instructor": {"objectType": "Group", "mbox": "mailto:tutors@uni.example"}}),  # noqa: E501
    accepted("no-id", "D 2.4.1.s2.b1", "a statement without id is valid (the LRS generates one)", "simplest", {"id": DELETE}),  # noqa: E501
    accepted("attachment-length-integral-float", "D 2.4.11", "length 27.0 is the integer 27 in JSON", ATT, {"attachments.0.length": 27.0}),  # noqa: E501
    accepted("empty-result-and-context", "D 2.2.s2.b1", "properties with an empty object SHOULD NOT be sent (not MUST): accepted", "simplest", {"result": {}, "context": {}}),  # noqa: E501
]
# fmt: on

#: The other tests of this module and what they prove.
# fmt: off
OTHER_REQUIREMENTS: dict[str, str] = {
    "test_specification_examples": "D Appendix A-D, 2.3.2, 2.4.4.3, 2.4.9, C 1.5.2: the specification's example statements are valid",  # noqa: E501
    "test_interaction_examples": "D Appendix C / 2.4.4.1.s13.b1: each interactionType's definition is valid",  # noqa: E501
    "test_statement_must_be_an_object": "D 2.2: a statement is a JSON object (bad_type otherwise)",  # noqa: E501
    "test_authority_three_members": "D 2.4.9.s3.b1: an authority Group has exactly two Agents",  # noqa: E501
    "test_batch": "C 2.1.2: POST takes one statement or an array; C 3.2.s3.b9: a batch with one bad statement is refused (index named)",  # noqa: E501
    "test_batch_duplicate_ids": "C 2.1.2.s2.b6: a batch with two statements of one id is refused with 400",  # noqa: E501
    "test_prepare_fills_what_the_lrs_sets": "D 2.4.1.s2.b1 (id), 2.4.7.s3.b2 (timestamp = stored), 2.4.8.s3.b2 (stored overwritten), 2.4.9.s3.b4 (authority), 2.4.10.s3.b3 (version 1.0.0 when missing)",  # noqa: E501
    "test_prepare_keeps_what_was_sent": "D 2.2.s2.b5: the LRS MUST NOT return a different serialisation of properties other than the exceptions",  # noqa: E501
    "test_same_statement": "D 2.3.1.s9.b1/b2: differences caused by immutability exceptions MUST be ignored; other differences MUST NOT",  # noqa: E501
    "test_version_header_accepted": "C 3.3.s3.b3/b5: accept 1.0 (as 1.0.0) and any 1.0.x header",  # noqa: E501
    "test_version_header_refused": "C 3.3.s3.b4/b6/b7: reject versions before 1.0.0 and 1.1.0 or later, and a missing header, with 400",  # noqa: E501
    "test_agent_param": "C 2.1.3 (agent), D 2.2.s4.b4: parameter values are validated like statement values",  # noqa: E501
    "test_parse_json": "D 2.2.s2.b2: a statement MUST use each property no more than one time (duplicate keys refused)",  # noqa: E501
    "test_person_object": "C 2.4: the Agents resource returns a Person object (arrays of names and IFIs)",  # noqa: E501
    "test_statement_agents": "C 2.1.3: agent filter (actor or object, group members match); related_agents adds authority, instructor, team and SubStatement's",  # noqa: E501
    "test_statement_activities": "C 2.1.3: activity filter (object); related_activities adds context activities and SubStatement's",  # noqa: E501
    "test_format_ids": "C 2.1.3 format=ids: minimum information to identify Agents, Activities, Verbs, Groups (anonymous: members)",  # noqa: E501
    "test_format_canonical": "C 2.1.3.s4.b1/b5: canonical returns one language per map, chosen by Accept-Language",  # noqa: E501
    "test_format_exact_arrays": "D 2.4.6.2.s4.b3/b4: contextActivities values are returned as arrays; exact keeps everything else",  # noqa: E501
    "test_never_refuses_generated_statements": "D 2.2 / C 3.2: a valid statement is never refused (property test)",  # noqa: E501
}
# fmt: on

REQUIREMENTS: dict[str, str] = {
    **{f"test_refuses[{r.id}]": f"{r.section}: {r.must}" for r in REFUSED},
    **{f"test_accepts[{r.id}]": f"{r.section}: {r.must}" for r in ACCEPTED},
    **OTHER_REQUIREMENTS,
}


# -- the rules ----------------------------------------------------------------------
@pytest.mark.parametrize("rule", REFUSED, ids=lambda r: r.id)
def test_refuses(rule: Rule) -> None:
    statement = changed(rule.base, rule.changes)
    base_version = "2.0.0" if rule.base.startswith("v2:") else rule.version
    validate_statement(base(rule.base), version=base_version)  # the base is valid
    with pytest.raises(StatementError) as caught:
        validate_statement(statement, version=rule.version)
    assert (caught.value.reason, caught.value.path) == (rule.reason, rule.path)
    assert rule.reason in REASONS


@pytest.mark.parametrize("rule", ACCEPTED, ids=lambda r: r.id)
def test_accepts(rule: Rule) -> None:
    statement = changed(rule.base, rule.changes)
    assert json.dumps(statement) != json.dumps(base(rule.base)) or not rule.changes
    validate_statement(statement, version=rule.version)


def test_statement_must_be_an_object() -> None:
    values: list[object] = ["statement", 5, [], None]
    for value in values:
        with pytest.raises(StatementError) as caught:
            validate_statement(value)
        assert caught.value.reason == ("null_value" if value is None else "bad_type")
        assert caught.value.path == "statement"


def test_authority_three_members() -> None:
    statement = base(AUTH)
    statement["authority"]["member"].append({"mbox": "mailto:james@uni.example"})
    with pytest.raises(StatementError) as caught:
        validate_statement(statement)
    assert (caught.value.reason, caught.value.path) == (
        "bad_actor",
        "statement.authority",
    )


def test_requirements_table_is_complete() -> None:
    """Every test id of the tables is unique and listed in REQUIREMENTS."""
    ids = [r.id for r in REFUSED] + [r.id for r in ACCEPTED]
    assert len(ids) == len(set(ids))
    assert len(REQUIREMENTS) == len(REFUSED) + len(ACCEPTED) + len(OTHER_REQUIREMENTS)
    names = {n for n in globals() if n.startswith("test_")}
    assert set(OTHER_REQUIREMENTS) <= names


@pytest.mark.parametrize("name", sorted(EXAMPLES["statements"]))
def test_specification_examples(name: str) -> None:
    validate_statement(base(name))
    validate_statement(base(name), version="2.0.0")


@pytest.mark.parametrize("kind", sorted(EXAMPLES["interactions"]))
def test_interaction_examples(kind: str) -> None:
    validate_statement(_quiz(kind))


def test_error_is_one_line_and_typed() -> None:
    statement = changed(LONG, {"verb.id": "not an\niri"})
    with pytest.raises(StatementError) as caught:
        validate_statement(statement, path="statement[3]")
    err = caught.value
    assert isinstance(err, ValueError)
    assert isinstance(err, LearnTrackError)
    assert err.path == "statement[3].verb.id"
    assert "\n" not in str(err)
    assert str(err).startswith("statement[3].verb.id: ")


def test_unknown_property_hints_the_right_case() -> None:
    with pytest.raises(StatementError) as caught:
        validate_statement(changed("simplest", {"actor.MBOX": "mailto:x@y.example"}))
    assert "'mbox'" in caught.value.detail


# -- batches --------------------------------------------------------------------------
def test_batch() -> None:
    one = base("simplest")
    assert validate_statements(one) == [one]
    many = [base("simplest"), base("voiding"), base(SUB)]
    assert validate_statements(many) == many
    many[2]["object"]["verb"] = {"id": "no iri"}
    with pytest.raises(StatementError) as caught:
        validate_statements(many)
    assert caught.value.path == "statement[2].object.verb.id"
    for body, reason in (([], "empty_batch"), ("x", "bad_type"), ([1], "bad_type")):
        with pytest.raises(StatementError) as caught:
            validate_statements(body)
        assert caught.value.reason == reason


def test_batch_duplicate_ids() -> None:
    first, second = base("simplest"), base("simple_with_timestamp")
    second["id"] = first["id"].upper()
    with pytest.raises(StatementError) as caught:
        validate_statements([first, second])
    assert (caught.value.reason, caught.value.path) == (
        "duplicate_id",
        "statement[1].id",
    )


# -- what the LRS fills in ------------------------------------------------------------
def test_prepare_fills_what_the_lrs_sets() -> None:
    sent = base("voiding")
    sent["authority"] = {"mbox": "mailto:someone.else@uni.example"}
    prepared = prepare_statement(sent, stored=NOW, authority=WRITER, version="1.0.3")
    assert str(parse_uuid(prepared["id"])) == prepared["id"]
    assert prepared["stored"] == prepared["timestamp"] == "2026-12-06T16:00:00.123Z"
    assert prepared["authority"] == WRITER
    assert prepared["version"] == "1.0.0"
    assert "id" not in sent and "stored" not in sent  # the input is not changed
    validate_statement(prepared)
    later = prepare_statement(sent, stored=NOW, authority=WRITER, version="2.0")
    assert later["version"] == "2.0.0"
    assert later["id"] != prepared["id"]
    with pytest.raises(ValueError, match="timezone-aware"):
        prepare_statement(
            sent, stored=NOW.replace(tzinfo=None), authority=WRITER, version="1.0.3"
        )  # noqa: E501


def test_prepare_keeps_what_was_sent() -> None:
    sent = base(LONG)
    prepared = prepare_statement(sent, stored=NOW, authority=WRITER, version="1.0.3")
    assert prepared["stored"] == "2026-12-06T16:00:00.123Z"  # always overwritten
    for key in ("id", "timestamp", "version", "actor", "verb", "object", "context"):
        assert prepared[key] == sent[key]
    prepared["actor"]["member"].pop()
    assert len(sent["actor"]["member"]) == 3  # a deep copy
    assert statement_version("1.0") == "1.0.0"
    assert statement_version("2.0.0") == "2.0.0"


# -- statement comparison -------------------------------------------------------------
def _same_cases() -> list[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    long_ = base(LONG)
    sub = base(SUB)
    # fmt: off
    cases: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
        ("identical", long_, base(LONG), True),
        ("lrs-filled", base("simplest"), prepare_statement(base("simplest"), stored=NOW, authority=WRITER, version="1.0.3"), True),  # noqa: E501
        ("stored-authority-version", long_, changed(LONG, {"stored": "2030-01-01T00:00:00Z", "authority": WRITER, "version": "1.0.3"}), True),  # noqa: E501
        ("timestamp-other-zone", long_, changed(LONG, {"timestamp": "2026-05-18T07:32:34.804+02:00"}), True),  # noqa: E501
        ("timestamp-beyond-ms", long_, changed(LONG, {"timestamp": "2026-05-18T05:32:34.8049Z"}), True),  # noqa: E501
        ("timestamp-other-instant", long_, changed(LONG, {"timestamp": "2026-05-18T05:32:35.804Z"}), False),  # noqa: E501
        ("id-case", long_, changed(LONG, {"id": long_["id"].upper()}), True),
        ("id-other", long_, changed(LONG, {"id": "0b5e8f3a-6c1d-4e2f-9a7b-1c2d3e4f5a6b"}), False),  # noqa: E501
        ("member-order", long_, changed(LONG, {"actor.member": list(reversed(long_["actor"]["member"]))}), True),  # noqa: E501
        ("member-missing", long_, changed(LONG, {"actor.member": long_["actor"]["member"][:2]}), False),  # noqa: E501
        ("verb-display", long_, changed(LONG, {"verb.display": {"fr": "a assisté"}}), True),  # noqa: E501
        ("verb-id", long_, changed(LONG, {"verb.id": "http://adlnet.gov/expapi/verbs/missed"}), False),  # noqa: E501
        ("activity-definition", long_, changed(LONG, {"object.definition": {"name": {"en": "renamed"}}}), True),  # noqa: E501
        ("activity-object-type-default", long_, changed(LONG, {"object.objectType": DELETE}), True),  # noqa: E501
        ("agent-object-type-default", long_, changed(LONG, {"context.instructor.objectType": DELETE}), True),  # noqa: E501
        ("context-activity-single", long_, changed(LONG, {"context.contextActivities.parent": long_["context"]["contextActivities"]["parent"][0]}), True),  # noqa: E501
        ("mbox-domain-case", long_, changed(LONG, {"actor.mbox": "mailto:team.delta@UNI.EXAMPLE"}), True),  # noqa: E501
        ("mbox-local-part", long_, changed(LONG, {"actor.mbox": "mailto:Team.Delta@uni.example"}), False),  # noqa: E501
        ("sha1-case", long_, changed(LONG, {"actor.member.2.mbox_sha1sum": "EBD31E95054C018B10727CCFFD2EF2EC3A016EE9"}), True),  # noqa: E501
        ("registration-case", long_, changed(LONG, {"context.registration": long_["context"]["registration"].upper()}), True),  # noqa: E501
        ("result-response", long_, changed(LONG, {"result.response": "Something else."}), False),  # noqa: E501
        ("result-extension", long_, changed(LONG, {"result.extensions": {}}), False),  # noqa: E501
        ("duration-beyond-centiseconds", changed(ATTEMPT, {"result.duration": "PT1.234S"}), changed(ATTEMPT, {"result.duration": "PT1.2399S"}), True),  # noqa: E501
        ("duration-other-units", changed(ATTEMPT, {"result.duration": "PT60S"}), changed(ATTEMPT, {"result.duration": "PT1M"}), False),  # noqa: E501
        ("score-int-float", changed(ATTEMPT, {"result.score.scaled": 1}), changed(ATTEMPT, {"result.score.scaled": 1.0}), True),  # noqa: E501
        ("attachments", base(SIG), changed(SIG, {"attachments": DELETE}), True),
        ("substatement-verb-display", sub, changed(SUB, {"object.verb.display": {"de": "besucht"}}), True),  # noqa: E501
        ("substatement-actor", sub, changed(SUB, {"object.actor.mbox": "mailto:ben@uni.example"}), False),  # noqa: E501
        ("extra-property", long_, changed(LONG, {"context.revision": "2"}), False),
    ]
    # fmt: on
    return cases


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [c[1:] for c in _same_cases()],
    ids=[c[0] for c in _same_cases()],
)  # noqa: E501
def test_same_statement(a: dict[str, Any], b: dict[str, Any], expected: bool) -> None:
    assert same_statement(a, b) is expected
    assert same_statement(b, a) is expected


# -- versions -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "version"),
    [
        ("1.0", "1.0.0"),
        ("1.0.0", "1.0.0"),
        ("1.0.3", "1.0.3"),
        (" 1.0.9 ", "1.0.9"),
        ("2.0", "2.0.0"),
        ("2.0.0", "2.0.0"),
    ],  # noqa: E501
)
def test_version_header_accepted(header: str, version: str) -> None:
    assert parse_version_header(header) == version


@pytest.mark.parametrize(
    "header", [None, "", "0.9.5", "0.95", "1.1.0", "1.1", "3.0.0", "latest"]
)  # noqa: E501
def test_version_header_refused(header: str | None) -> None:
    with pytest.raises(StatementError) as caught:
        parse_version_header(header)
    assert (caught.value.reason, caught.value.path) == (
        "bad_version",
        "X-Experience-API-Version",
    )  # noqa: E501


def test_supported_versions_parse_as_themselves() -> None:
    assert [parse_version_header(v) for v in SUPPORTED_VERSIONS] == list(
        SUPPORTED_VERSIONS
    )


# -- request bodies -------------------------------------------------------------------
def test_parse_json() -> None:
    body = '[{"actor": {"mbox": "mailto:a@b.example"}, "verb": {"id": "urn:v"}}]'
    assert parse_json(body.encode()) == json.loads(body)
    for text, reason in (
        (
            '{"actor": {"mbox": "mailto:a@b.example", "mbox": "mailto:c@d.example"}}',
            "duplicate_property",
        ),  # noqa: E501
        ('{"result": {"score": {"raw": NaN}}}', "bad_json"),
        ('{"result": {"score": {"raw": -Infinity}}}', "bad_json"),
        ("{not json", "bad_json"),
        (b"\xff\xfe{", "bad_json"),
    ):
        with pytest.raises(StatementError) as caught:
            parse_json(text, path="body")
        assert (caught.value.reason, caught.value.path) == (reason, "body")


def test_person_object() -> None:
    agent = {"objectType": "Agent", "name": "Ana", "mbox": "mailto:ana@uni.example"}
    assert person_object(agent) == {
        "objectType": "Person",
        "name": ["Ana"],
        "mbox": ["mailto:ana@uni.example"],
    }
    account = {"account": {"homePage": "https://lms.example", "name": "S1"}}
    assert person_object(account) == {
        "objectType": "Person",
        "account": [account["account"]],
    }  # noqa: E501


# -- query helpers --------------------------------------------------------------------
def test_agent_param() -> None:
    agent = parse_agent_param('{"mbox": "mailto:Ana@UNI.example"}')
    assert agent_ifi(agent) == "mbox:mailto:Ana@uni.example"
    group = parse_agent_param('{"objectType": "Group", "openid": "https://g.example/"}')
    assert agent_ifi(group) == "openid:https://g.example/"
    for text, reason in (
        ("{not json", "bad_json"),
        (
            '{"objectType": "Group", "member": [{"mbox": "mailto:a@b.example"}]}',
            "bad_actor",
        ),  # noqa: E501
        ('{"mbox": "a@b.example"}', "bad_actor"),
        ('{"name": "no ifi"}', "bad_actor"),
        ("[]", "bad_type"),
    ):
        with pytest.raises(StatementError) as caught:
            parse_agent_param(text)
        assert (caught.value.reason, caught.value.path.split(".")[0]) == (
            reason,
            "agent",
        )


@pytest.mark.parametrize(
    ("agent", "key"),
    [
        ({"mbox": "MAILTO:a@Example.COM"}, "mbox:mailto:a@example.com"),
        (
            {"mbox_sha1sum": "EBD31E95054C018B10727CCFFD2EF2EC3A016EE9"},
            "mbox_sha1sum:ebd31e95054c018b10727ccffd2ef2ec3a016ee9",
        ),  # noqa: E501
        ({"openid": "https://id.example/ana"}, "openid:https://id.example/ana"),
        (
            {"account": {"homePage": "https://lms.example", "name": "S1"}},
            "account:https://lms.example|S1",
        ),  # noqa: E501
        ({"objectType": "Group", "member": [{"mbox": "mailto:a@b.example"}]}, None),
    ],
)
def test_agent_ifi(agent: dict[str, Any], key: str | None) -> None:
    assert agent_ifi(agent) == key


def test_statement_agents() -> None:
    long_ = base(LONG)
    actor_keys = {
        "mbox:mailto:team.delta@uni.example",
        "account:https://lms.uni.example|S1001",
        "openid:https://ben.openid.uni.example/",
        "mbox_sha1sum:ebd31e95054c018b10727ccffd2ef2ec3a016ee9",
    }
    assert statement_agents(long_, related=False) == actor_keys
    assert statement_agents(long_, related=True) == actor_keys | {
        "account:https://lrs.learntrack.example/|anonymous",  # authority
    }  # instructor and team are members/the group already
    as_object = base(AS_AGENT)
    assert statement_agents(as_object, related=False) == {
        "mbox:mailto:tutor@uni.example",
        "mbox:mailto:ben.okafor@uni.example",
    }
    planned = base(SUB)
    planned["object"]["actor"] = {"mbox": "mailto:ben.okafor@uni.example"}
    planned["object"]["context"] = {"instructor": {"mbox": "mailto:tutor@uni.example"}}
    assert statement_agents(planned, related=False) == {
        "mbox:mailto:ana.diaz@uni.example"
    }
    assert statement_agents(planned, related=True) == {
        "mbox:mailto:ana.diaz@uni.example",
        "mbox:mailto:ben.okafor@uni.example",
        "mbox:mailto:tutor@uni.example",
    }
    v2 = base(V2)
    assert "mbox:mailto:referee@uni.example" in statement_agents(v2, related=True)
    assert "mbox:mailto:team-1@uni.example" in statement_agents(v2, related=True)
    assert "mbox:mailto:referee@uni.example" not in statement_agents(v2, related=False)


def test_statement_activities() -> None:
    long_ = base(LONG)
    assert statement_activities(long_, related=False) == {
        "https://learntrack.example/meetings/occurrences/34534"
    }
    assert statement_activities(long_, related=True) == {
        "https://learntrack.example/meetings/occurrences/34534",
        "https://learntrack.example/meetings/series/267",
        "https://learntrack.example/meetings/categories/team-meeting",
        "https://learntrack.example/meetings/occurrences/34257",
        "https://learntrack.example/meetings/occurrences/3425567",
    }
    single = changed(AS_AGENT, {})
    assert statement_activities(single, related=False) == set()
    assert statement_activities(single, related=True) == {
        "https://learntrack.example/courses/ALG1"
    }
    planned = base(SUB)
    assert statement_activities(planned, related=False) == set()
    assert statement_activities(planned, related=True) == {
        "https://learntrack.example/website"
    }


def test_registration_and_voiding_keys() -> None:
    long_ = changed(
        LONG, {"context.registration": "4F9C2D7E-A051-4C63-9EBF-5A6B7C8D9EAF"}
    )
    assert statement_registration(long_) == "4f9c2d7e-a051-4c63-9ebf-5a6b7c8d9eaf"
    assert statement_registration(base("simplest")) is None
    assert (
        voided_statement_id(base("voiding")) == "e05aa883-acaf-40ad-bf54-02c8ce485fb0"
    )
    assert voided_statement_id(base(REF)) is None


def test_parameter_parsers() -> None:
    assert parse_uuid("AA97B177-9383-4934-8543-0F91A7A02836") == (
        "aa97b177-9383-4934-8543-0f91a7a02836"
    )
    assert parse_iri("urn:x:y", path="verb") == "urn:x:y"
    for call, reason in (
        (lambda: parse_uuid("nope"), "bad_uuid"),
        (lambda: parse_iri("nope", path="verb"), "bad_iri"),
        (lambda: parse_timestamp("2026-01-01", path="since"), "bad_timestamp"),
    ):
        with pytest.raises(StatementError) as caught:
            call()
        assert caught.value.reason == reason
    since = parse_timestamp("2026-01-01T01:00:00+01:00", path="since")
    assert since == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_timestamp("2026-01-01T23:59:60Z").second == 59  # a leap second
    assert parse_timestamp("2026-01-01T24:00:00Z") == dt.datetime(
        2026, 1, 2, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("header", "ranges"),
    [
        ("fr-CH, fr;q=0.9, en;q=0.8, *;q=0.5", ["fr-CH", "fr", "en", "*"]),
        ("en;q=0.1, de", ["de", "en"]),
        ("de;q=0, en", ["en"]),
        ("", []),
        (None, []),
    ],
)
def test_accept_language(header: str | None, ranges: list[str]) -> None:
    assert parse_accept_language(header) == ranges


# -- the format parameter -------------------------------------------------------------
def test_format_ids() -> None:
    formatted = format_statement(base(LONG), "ids", [])
    assert formatted["actor"] == {
        "objectType": "Group",
        "mbox": "mailto:team.delta@uni.example",
    }  # noqa: E501
    assert formatted["verb"] == {"id": "http://adlnet.gov/expapi/verbs/attended"}
    assert formatted["object"] == {
        "objectType": "Activity",
        "id": "https://learntrack.example/meetings/occurrences/34534",
    }
    assert formatted["context"]["instructor"] == {
        "objectType": "Agent",
        "account": {"homePage": "https://lms.uni.example", "name": "S1001"},
    }
    assert formatted["context"]["contextActivities"]["category"] == [
        {
            "objectType": "Activity",
            "id": "https://learntrack.example/meetings/categories/team-meeting",
        }  # noqa: E501
    ]
    assert formatted["result"] == base(LONG)["result"]
    anonymous = format_statement(base(ANON), "ids", [])
    assert anonymous["actor"] == {
        "objectType": "Group",
        "member": [
            {"objectType": "Agent", "mbox": "mailto:ana.diaz@uni.example"},
            {"objectType": "Agent", "mbox": "mailto:ben.okafor@uni.example"},
        ],
    }
    validate_statement(formatted)
    assert same_statement(formatted, base(LONG)) is False  # member lists dropped


def test_format_canonical() -> None:
    statement = changed(
        LONG,
        {"verb.display": {"en-GB": "attended", "fr": "a assisté", "de-DE": "besucht"}},
    )  # noqa: E501
    canonical = format_statement(statement, "canonical", ["de", "fr"])
    assert canonical["verb"]["display"] == {"de-DE": "besucht"}
    assert canonical["object"]["definition"]["name"] == {"en-GB": "week 12 meeting"}
    assert canonical["actor"] == statement["actor"]  # agents as in exact
    assert format_statement(statement, "canonical", ["fr-CA"])["verb"]["display"] == {
        "fr": "a assisté"
    }
    quiz = format_statement(
        changed(
            CHOICE,
            {
                "object.definition.choices.0.description": {
                    "en-US": "MongoDB",
                    "es": "MongoDB (es)",
                }
            },
        ),  # noqa: E501
        "canonical",
        ["es"],
    )
    assert quiz["object"]["definition"]["choices"][0]["description"] == {
        "es": "MongoDB (es)"
    }  # noqa: E501
    assert quiz["object"]["definition"]["choices"][1]["description"] == {
        "en-US": "Oracle"
    }
    assert same_statement(canonical, statement)  # display and definitions only
    with pytest.raises(StatementError) as caught:
        format_statement(statement, "full", [])
    assert (caught.value.reason, caught.value.path) == ("bad_parameter", "format")


def test_format_exact_arrays() -> None:
    statement = changed(
        AS_AGENT,
        {
            "context.contextActivities.grouping": {
                "id": "https://learntrack.example/courses/ALG1"
            }
        },
    )  # noqa: E501
    for fmt in FORMATS:
        formatted = format_statement(statement, fmt, ["en"])
        assert isinstance(formatted["context"]["contextActivities"]["grouping"], list)
    exact = format_statement(statement, "exact", [])
    assert exact["context"]["contextActivities"]["grouping"] == [
        {"id": "https://learntrack.example/courses/ALG1"}
    ]
    assert {k: v for k, v in exact.items() if k != "context"} == {
        k: v for k, v in statement.items() if k != "context"
    }


# -- properties: generated valid statements are never refused -------------------------
_TAGS = st.sampled_from(
    [
        "en",
        "en-US",
        "EN-gb",
        "de",
        "de-CH-1901",
        "zh-Hant",
        "zh-cmn-Hans-CN",
        "fa",
        "sr-Latn-RS",
        "x-whatever",
        "i-enochian",
        "es-419",
        "tlh",
    ]
) | st.from_regex(r"[a-z]{2,3}(-[A-Z]{2})?", fullmatch=True)
_TEXT = st.text(max_size=12)
_IRI_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"),
    blacklist_characters='<>"{}|\\^`',
)
_IRIS = st.builds(
    "{}:{}".format,
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9+.-]{0,6}", fullmatch=True),
    st.text(_IRI_CHARS, max_size=20),
)
_LANGUAGE_MAPS = st.dictionaries(_TAGS, _TEXT, min_size=1, max_size=3)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3)
    ),
    max_leaves=6,
)
_EXTENSIONS = st.dictionaries(_IRIS, _JSON, max_size=3)
_UUIDS = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
_MBOXES = st.builds(
    "mailto:{}@{}.{}".format,
    st.from_regex(r"[A-Za-z0-9._+-]{1,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9-]{1,10}", fullmatch=True),
    st.sampled_from(["example", "edu", "org"]),
)
_IFIS: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda m: {"mbox": m}, _MBOXES),
    st.builds(
        lambda h: {"mbox_sha1sum": h}, st.from_regex(r"[0-9a-fA-F]{40}", fullmatch=True)
    ),  # noqa: E501
    st.builds(lambda i: {"openid": i}, _IRIS),
    st.builds(lambda h, n: {"account": {"homePage": h, "name": n}}, _IRIS, _TEXT),
)
_OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)  # noqa: E501


#: Nested statements are big examples on a loaded 2-core machine: not a defect.
SLOW_OK = [hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large]


@st.composite
def _agents(draw: st.DrawFn, *, object_type: bool = False) -> dict[str, Any]:
    agent = draw(_IFIS)
    if object_type or draw(st.booleans()):
        agent["objectType"] = "Agent"
    if draw(st.booleans()):
        agent["name"] = draw(_TEXT)
    return agent


@st.composite
def _groups(draw: st.DrawFn, *, identified: bool | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {"objectType": "Group"}
    is_identified = draw(st.booleans()) if identified is None else identified
    if is_identified:
        group.update(draw(_IFIS))
    if not is_identified or draw(st.booleans()):
        group["member"] = draw(st.lists(_agents(), max_size=3))
    if draw(st.booleans()):
        group["name"] = draw(_TEXT)
    return group


@st.composite
def _timestamps(draw: st.DrawFn) -> str:
    moment = draw(
        st.datetimes(
            min_value=dt.datetime(1000, 1, 1),  # noqa: DTZ001 - naive bound, zones apart
            timezones=_OFFSETS,
        )
    )
    text = moment.isoformat(
        timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    )  # noqa: E501
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    return text


@st.composite
def _durations(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return f"P{draw(st.integers(0, 520))}W"
    numbers = draw(st.lists(st.integers(0, 9999), min_size=6, max_size=6))
    present = draw(st.lists(st.booleans(), min_size=6, max_size=6).filter(any))
    date = "".join(
        f"{n}{u}" for n, u, p in zip(numbers[:3], "YMD", present[:3], strict=True) if p
    )  # noqa: E501
    time = "".join(
        f"{n}{u}" for n, u, p in zip(numbers[3:], "HMS", present[3:], strict=True) if p
    )  # noqa: E501
    if present[5] and draw(st.booleans()):
        time = time[:-1] + f".{draw(st.integers(0, 999999))}S"
    return "P" + date + (f"T{time}" if time else "")


@st.composite
def _definitions(draw: st.DrawFn) -> dict[str, Any]:
    definition: dict[str, Any] = {}
    for key, strategy in (
        ("name", _LANGUAGE_MAPS),
        ("description", _LANGUAGE_MAPS),
        ("type", _IRIS),
        ("moreInfo", _IRIS),
        ("extensions", _EXTENSIONS),
    ):
        if draw(st.booleans()):
            definition[key] = draw(strategy)
    if draw(st.booleans()):
        definition["interactionType"] = draw(
            st.sampled_from(sorted(EXAMPLES["interactions"]))
        )  # noqa: E501
        definition["correctResponsesPattern"] = draw(st.lists(_TEXT, max_size=3))
        ids = draw(st.lists(_TEXT, unique=True, max_size=4))
        definition[
            draw(st.sampled_from(["choices", "scale", "source", "target", "steps"]))
        ] = [  # noqa: E501
            {"id": i, "description": draw(_LANGUAGE_MAPS)} for i in ids
        ]
    return definition


@st.composite
def _activities(draw: st.DrawFn) -> dict[str, Any]:
    activity: dict[str, Any] = {"id": draw(_IRIS)}
    if draw(st.booleans()):
        activity["objectType"] = "Activity"
    if draw(st.booleans()):
        activity["definition"] = draw(_definitions())
    return activity


@st.composite
def _results(draw: st.DrawFn) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if draw(st.booleans()):
        bounds = sorted(draw(st.lists(st.floats(-1e9, 1e9), min_size=3, max_size=3)))
        score = {"min": bounds[0], "raw": bounds[1], "max": bounds[2]}
        score = {k: v for k, v in score.items() if draw(st.booleans())}
        if draw(st.booleans()):
            score["scaled"] = draw(st.floats(-1, 1))
        result["score"] = score
    for key, strategy in (
        ("success", st.booleans()),
        ("completion", st.booleans()),
        ("response", _TEXT),
        ("duration", _durations()),
        ("extensions", _EXTENSIONS),
    ):
        if draw(st.booleans()):
            result[key] = draw(strategy)
    return result


@st.composite
def _contexts(draw: st.DrawFn, *, activity_object: bool, v2: bool) -> dict[str, Any]:
    context: dict[str, Any] = {}
    optional: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("registration", _UUIDS),
        ("instructor", _agents() | _groups()),
        ("team", _groups()),
        ("language", _TAGS),
        (
            "statement",
            st.builds(lambda i: {"objectType": "StatementRef", "id": i}, _UUIDS),
        ),  # noqa: E501
        ("extensions", _EXTENSIONS),
        (
            "contextActivities",
            st.dictionaries(
                st.sampled_from(["parent", "grouping", "category", "other"]),
                _activities() | st.lists(_activities(), max_size=2),
                min_size=1,
                max_size=4,
            ),
        ),
    ]
    if activity_object:
        optional += [("revision", _TEXT), ("platform", _TEXT)]
    if v2:
        optional += [
            (
                "contextAgents",
                st.lists(
                    st.builds(
                        lambda a: {"objectType": "contextAgent", "agent": a}, _agents()
                    ),
                    max_size=2,
                ),
            ),  # noqa: E501
            (
                "contextGroups",
                st.lists(
                    st.builds(
                        lambda g, t: {
                            "objectType": "contextGroup",
                            "group": g,
                            "relevantTypes": t,
                        },
                        _groups(),
                        st.lists(_IRIS, min_size=1, max_size=2),
                    ),
                    max_size=2,
                ),
            ),  # noqa: E501
        ]
    for key, strategy in optional:
        if draw(st.booleans()):
            context[key] = draw(strategy)
    return context


@st.composite
def _statements(
    draw: st.DrawFn, *, v2: bool = False, sub: bool = False
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "actor": draw(_agents() | _groups()),
        "verb": {"id": draw(_IRIS)},
    }
    if draw(st.booleans()):
        statement["verb"]["display"] = draw(_LANGUAGE_MAPS)
    objects: list[st.SearchStrategy[dict[str, Any]]] = [
        _activities(),
        _agents(object_type=True),
        _groups(),
        st.builds(lambda i: {"objectType": "StatementRef", "id": i}, _UUIDS),
    ]
    if not sub:
        objects.append(
            _statements(v2=v2, sub=True).map(
                lambda s: {**s, "objectType": "SubStatement"}
            )
        )  # noqa: E501
    statement["object"] = draw(st.one_of(objects))
    activity_object = statement["object"].get("objectType", "Activity") == "Activity"
    if draw(st.booleans()):
        statement["result"] = draw(_results())
    if draw(st.booleans()):
        statement["context"] = draw(_contexts(activity_object=activity_object, v2=v2))
    if draw(st.booleans()):
        statement["timestamp"] = draw(_timestamps())
    if not sub:
        if draw(st.booleans()):
            statement["id"] = draw(_UUIDS)
        if draw(st.booleans()):
            statement["version"] = draw(
                st.sampled_from(["1.0.0", "1.0.3", "1.0", *(["2.0.0"] if v2 else [])])
            )  # noqa: E501
        if draw(st.booleans()):
            statement["authority"] = draw(_agents())
    return statement


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@hypothesis.given(statement=_statements(), v2=st.booleans())
def test_never_refuses_generated_statements(
    statement: dict[str, Any], v2: bool
) -> None:
    version = "2.0.0" if v2 else "1.0.3"
    validate_statement(statement, version=version)
    prepared = prepare_statement(
        statement, stored=NOW, authority=WRITER, version=version
    )
    validate_statement(prepared, version=version)
    assert same_statement(statement, prepared)
    for fmt in FORMATS:
        validate_statement(format_statement(prepared, fmt, ["en"]), version=version)


@hypothesis.settings(max_examples=100, deadline=None, suppress_health_check=SLOW_OK)
@hypothesis.given(statement=_statements(v2=True), seed=st.integers(0, 2**32))
def test_comparison_ignores_member_order(statement: dict[str, Any], seed: int) -> None:
    validate_statement(statement, version="2.0.0")
    shuffled = copy.deepcopy(statement)
    members = shuffled["actor"].get("member")
    if members:
        random.Random(seed).shuffle(members)
    assert same_statement(statement, shuffled)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(text=_IRIS)
def test_generated_iris_are_iris(text: str) -> None:
    assert is_iri(text)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(text=st.text(string.ascii_letters + string.digits + "-", max_size=20))
def test_language_tags_are_case_insensitive(text: str) -> None:
    assert is_language_tag(text) == is_language_tag(text.upper())
    assert is_language_tag(text) == is_language_tag(text.lower())


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("PT1H0M0.1S", True),
        ("PT4H35M59.14S", True),
        ("P3Y1M29DT4H35M59.14S", True),
        ("P3Y", True),
        ("P4W", True),
        ("PT1,5S", True),
        ("PT0S", True),
        ("P16559.14S", True),
        ("P", False),
        ("PT", False),
        ("P1YT", False),
        ("P4W1D", False),
        ("P1.5DT2H", False),
        ("-PT1S", False),
        ("PT1H 2M", False),
    ],
)
def test_durations(text: str, valid: bool) -> None:
    assert is_duration(text) is valid
