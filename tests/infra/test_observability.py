"""Dashboard, alarms, the optional alarm topic, and tracing."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match
from stratoflow_infra.contract import (
    METRIC_QUEUE_LATENCY,
    METRIC_RUNS_FAILED,
    METRIC_RUNS_STARTED,
    METRIC_RUNS_SUCCEEDED,
    METRIC_TASK_DURATION,
    METRIC_TASKS_FAILED,
    METRIC_TASKS_RETRIED,
    METRIC_TASKS_SUCCEEDED,
    METRIC_TASKS_TIMED_OUT,
    METRIC_WORKFLOW_LOAD_FAILED,
    METRICS_NAMESPACE,
)

from .conftest import Synthesized


def alarms(synth: Synthesized) -> dict[str, dict]:
    return {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
    }


def dashboard_body(synth: Synthesized) -> str:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    return json.dumps(dashboard["Properties"]["DashboardBody"])


def test_the_alarms_the_issue_asks_for(synth: Synthesized) -> None:
    assert set(alarms(synth)) == {
        "stratoflow-TasksDeadLetterQueueNotEmpty",
        "stratoflow-CompletionsDeadLetterQueueNotEmpty",
        "stratoflow-RunsFailed",
        "stratoflow-WorkflowLoadFailed",
        "stratoflow-ExecutorErrors",
        "stratoflow-ApiServerErrors",
        "stratoflow-OldestTaskMessageAge",
    }


def test_dead_letter_queue_alarms_fire_on_the_first_message(synth: Synthesized) -> None:
    for name, queue in (("Tasks", synth.stack.tasks), ("Completions", synth.stack.completions)):
        alarm = alarms(synth)[f"stratoflow-{name}DeadLetterQueueNotEmpty"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"] == [
            {
                "Name": "QueueName",
                "Value": {"Fn::GetAtt": [synth.logical_id(queue.dead_letter_queue), "QueueName"]},
            }
        ]
        assert alarm["Threshold"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_failed_runs_alarm_uses_the_metric_aggregated_over_workflows(synth: Synthesized) -> None:
    alarm = alarms(synth)["stratoflow-RunsFailed"]
    assert alarm["Namespace"] == METRICS_NAMESPACE
    assert alarm["MetricName"] == METRIC_RUNS_FAILED
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "stratoflow"}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_workflow_load_failures_alarm(synth: Synthesized) -> None:
    alarm = alarms(synth)["stratoflow-WorkflowLoadFailed"]
    assert alarm["MetricName"] == METRIC_WORKFLOW_LOAD_FAILED
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "stratoflow"}]


def test_executor_errors_alarm(synth: Synthesized) -> None:
    alarm = alarms(synth)["stratoflow-ExecutorErrors"]
    executor = synth.logical_id(synth.stack.functions["executor"].function)
    assert alarm["Namespace"] == "AWS/Lambda"
    assert alarm["MetricName"] == "Errors"
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": executor}}]


def test_api_server_errors_alarm(synth: Synthesized) -> None:
    alarm = alarms(synth)["stratoflow-ApiServerErrors"]
    assert alarm["Namespace"] == "AWS/ApiGateway"
    assert alarm["MetricName"] == "5XXError"
    assert alarm["Dimensions"] == [{"Name": "ApiName", "Value": "stratoflow"}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 1


def test_oldest_task_message_age_alarm_threshold_is_a_setting(
    synth: Synthesized, synth_custom: Synthesized
) -> None:
    alarm = alarms(synth)["stratoflow-OldestTaskMessageAge"]
    assert alarm["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert alarm["Threshold"] == 900
    assert alarms(synth_custom)["acme-flow-OldestTaskMessageAge"]["Threshold"] == 600


def test_no_topic_without_an_alarm_email(synth: Synthesized) -> None:
    synth.template.resource_count_is("AWS::SNS::Topic", 0)
    for alarm in alarms(synth).values():
        assert "AlarmActions" not in alarm


def test_alarm_email_subscribes_to_an_encrypted_topic_every_alarm_notifies(
    synth_custom: Synthesized,
) -> None:
    topic_id = synth_custom.logical_id(synth_custom.stack.observability.topic)
    synth_custom.template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()}
    )
    synth_custom.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": topic_id}},
    )
    for alarm in alarms(synth_custom).values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
    synth_custom.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_dashboard_shows_run_and_task_metrics_with_a_per_workflow_view(
    synth: Synthesized,
) -> None:
    body = dashboard_body(synth)
    for metric in (
        METRIC_RUNS_STARTED,
        METRIC_RUNS_SUCCEEDED,
        METRIC_RUNS_FAILED,
        METRIC_TASKS_SUCCEEDED,
        METRIC_TASKS_FAILED,
        METRIC_TASKS_RETRIED,
        METRIC_TASKS_TIMED_OUT,
        METRIC_TASK_DURATION,
        METRIC_QUEUE_LATENCY,
    ):
        assert f'\\"{metric}\\"' in body, metric
    assert "SEARCH(" in body and "workflow" in body


def test_dashboard_shows_queues_and_functions(synth: Synthesized) -> None:
    body = dashboard_body(synth)
    for metric in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "Errors",
        "Throttles",
        "Duration",
    ):
        assert metric in body
    for name in ("dispatcher", "executor", "completion", "loader", "api"):
        assert synth.logical_id(synth.stack.functions[name].function) in body
    for queue in (synth.stack.tasks, synth.stack.completions):
        assert synth.logical_id(queue.queue) in body
        assert synth.logical_id(queue.dead_letter_queue) in body


def test_dashboard_shows_api_requests_errors_and_latency(synth: Synthesized) -> None:
    body = dashboard_body(synth)
    for metric in ("Count", "4XXError", "5XXError", "Latency", "IntegrationLatency"):
        assert f'\\"AWS/ApiGateway\\",\\"{metric}\\"' in body, metric


def test_dashboard_lists_every_alarm(synth: Synthesized) -> None:
    body = dashboard_body(synth)
    for name in alarms(synth):
        assert f"alarm:{name}" in body


def test_every_function_traces_actively(synth: Synthesized) -> None:
    for function in synth.resources("AWS::Lambda::Function").values():
        assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}
