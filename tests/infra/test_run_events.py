"""The run events bus, who may put events on it, and the optional failed-run e-mail."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App
from stratoflow_infra.settings import StackSettings

from stratoflow.config import ENV_EVENT_BUS, EVENT_RUN_FINISHED, EVENT_SOURCE, OUTPUT_EVENT_BUS

from .conftest import Synthesized
from .test_permissions import all_actions, arn_of, role, statements

PUBLISHERS = ["dispatcher", "completion", "api"]
FAILED_RUNS = {
    "source": [EVENT_SOURCE],
    "detail-type": [EVENT_RUN_FINISHED],
    "detail": {"status": ["failed"]},
}


def bus_ref(synth: Synthesized) -> dict[str, str]:
    return {"Ref": synth.logical_id(synth.stack.run_events.bus)}


def bus_name(synth: Synthesized) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(synth.stack.run_events.bus), "Name"]}


def bus_rules(synth: Synthesized) -> list[dict[str, Any]]:
    """The rules on the run events bus (the dispatcher's tick is on the default bus)."""
    return [
        rule["Properties"]
        for rule in synth.resources("AWS::Events::Rule").values()
        if rule["Properties"].get("EventBusName") == bus_ref(synth)
    ]


def test_the_stack_creates_a_bus_named_after_the_prefix(
    synth: Synthesized, synth_custom: Synthesized
) -> None:
    synth.template.has_resource_properties("AWS::Events::EventBus", {"Name": "stratoflow"})
    synth_custom.template.has_resource_properties("AWS::Events::EventBus", {"Name": "acme-flow"})


@pytest.mark.parametrize("name", PUBLISHERS)
def test_functions_that_finish_runs_are_given_the_bus(synth: Synthesized, name: str) -> None:
    function = synth.json["Resources"][synth.logical_id(synth.stack.functions[name].function)]
    assert function["Properties"]["Environment"]["Variables"][ENV_EVENT_BUS] == bus_name(synth)


@pytest.mark.parametrize("name", PUBLISHERS)
def test_functions_that_finish_runs_may_put_events_on_the_bus_only(
    synth: Synthesized, name: str
) -> None:
    puts = [s for s in statements(synth, role(synth, name)) if s["action"].startswith("events:")]
    assert [(s["action"], s["resource"]) for s in puts] == [
        ("events:PutEvents", arn_of(synth, synth.stack.run_events.bus))
    ]


@pytest.mark.parametrize("name", ["executor", "fargate-task", "loader"])
def test_executors_and_loader_put_no_events(synth: Synthesized, name: str) -> None:
    assert not any(a.startswith("events:") for a in all_actions(synth, role(synth, name)))


def test_bus_name_is_an_output_under_the_key_the_cli_reads(synth: Synthesized) -> None:
    assert synth.json["Outputs"][OUTPUT_EVENT_BUS]["Value"] == bus_name(synth)


def test_without_a_failed_run_email_there_is_no_topic_and_no_rule(synth: Synthesized) -> None:
    assert synth.stack.run_events.topic is None
    assert bus_rules(synth) == []
    synth.template.resource_count_is("AWS::SNS::Topic", 0)


def test_failed_run_email_adds_a_rule_matching_failed_runs_exactly(
    synth_custom: Synthesized,
) -> None:
    (rule,) = bus_rules(synth_custom)
    assert rule["EventPattern"] == FAILED_RUNS
    topic = synth_custom.logical_id(synth_custom.stack.run_events.topic)
    assert [target["Arn"] for target in rule["Targets"]] == [{"Ref": topic}]


def test_failed_runs_are_emailed_from_an_encrypted_topic(synth_custom: Synthesized) -> None:
    events = synth_custom.stack.run_events
    topic = synth_custom.logical_id(events.topic)
    synth_custom.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": topic}},
    )
    key = synth_custom.json["Resources"][topic]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key_properties = synth_custom.json["Resources"][key]["Properties"]
    assert key_properties["EnableKeyRotation"] is True
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Resource": "*",
    } in key_properties["KeyPolicy"]["Statement"]


def test_only_the_failed_runs_rule_may_publish_and_only_over_tls(
    synth_custom: Synthesized,
) -> None:
    events = synth_custom.stack.run_events
    topic = {"Ref": synth_custom.logical_id(events.topic)}
    (policy,) = [
        p["Properties"]
        for p in synth_custom.resources("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [topic]
    ]
    statements_ = policy["PolicyDocument"]["Statement"]
    allows = [s for s in statements_ if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Action": "sns:Publish",
            "Condition": {
                "ArnEquals": {"aws:SourceArn": arn_of(synth_custom, events.failed_runs_rule)}
            },
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Resource": topic,
            "Sid": allows[0]["Sid"],
        }
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements_
    )


def test_failed_run_email_must_be_a_string() -> None:
    app = App(context={"stratoflow:failedRunEmail": 5})
    with pytest.raises(ValueError, match="stratoflow:failedRunEmail must be a string"):
        StackSettings.from_context(app.node)
