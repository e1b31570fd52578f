"""AWS adapters that the engine's runs on the emulator do not exercise: ECS, EMF, EventBridge."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from moto import mock_aws

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.ecs import FargateLauncher, RoutingTaskQueue
from stratoflow.aws.observability import EventBridgePublisher, PowertoolsMetrics
from stratoflow.config import (
    ENV_ECS_ASSIGN_PUBLIC_IP,
    ENV_ECS_CLUSTER,
    ENV_ECS_CONTAINER,
    ENV_ECS_SECURITY_GROUPS,
    ENV_ECS_SUBNETS,
    ENV_ECS_TASK_DEFINITION,
    ENV_TASK_MESSAGE,
)
from stratoflow.core.records import RunRecord, TaskMessage
from stratoflow.core.states import RunStatus


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsClients]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # moto 5.2's RunTask for awsvpc tasks reads an attribute its network interfaces lack.
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface

    if not hasattr(NetworkInterface, "private_dns_name"):
        monkeypatch.setattr(
            NetworkInterface,
            "private_dns_name",
            property(lambda eni: "ip.ec2.internal"),
            raising=False,
        )
    with mock_aws():
        yield AwsClients("us-east-1")


def _message(executor: str = "fargate") -> TaskMessage:
    return TaskMessage(
        run_id="r1",
        workflow_id="wf",
        version=1,
        task_id="heavy",
        attempt=1,
        logical_date="2026-01-01T00:00:00Z",
        executor=executor,
        cpu=1024,
        memory=4096,
    )


def _ecs_settings(aws: AwsClients) -> dict[str, str]:
    ecs = aws.client("ecs")
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="runner", Description="x", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName="stratoflow")
    task_def = ecs.register_task_definition(
        family="stratoflow-runner",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "runner", "image": "runner:latest", "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    return {
        ENV_ECS_CLUSTER: "stratoflow",
        ENV_ECS_TASK_DEFINITION: task_def,
        ENV_ECS_SUBNETS: subnet,
        ENV_ECS_SECURITY_GROUPS: group,
        ENV_ECS_CONTAINER: "runner",
        ENV_ECS_ASSIGN_PUBLIC_IP: "DISABLED",
    }


def test_a_fargate_attempt_starts_an_ecs_task_sized_by_the_task(aws: AwsClients) -> None:
    launcher = FargateLauncher(aws, _ecs_settings(aws))
    arn = launcher.launch(_message())
    task = aws.client("ecs").describe_tasks(cluster="stratoflow", tasks=[arn])["tasks"][0]
    overrides = task["overrides"]
    assert (overrides["cpu"], overrides["memory"]) == ("1024", "4096")
    [container] = overrides["containerOverrides"]
    assert container["name"] == "runner" and container["memory"] == 4096
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert TaskMessage.from_json(env[ENV_TASK_MESSAGE]) == _message()


def test_routing_sends_fargate_attempts_to_ecs_and_the_rest_to_sqs(aws: AwsClients) -> None:
    sent: list[TaskMessage] = []

    class Recorder:
        def send_tasks(self, messages, delay_seconds=0):  # type: ignore[no-untyped-def]
            sent.extend(messages)

    launched: list[str] = []
    launcher = FargateLauncher(aws, _ecs_settings(aws))
    original = launcher.launch
    launcher.launch = lambda msg: launched.append(msg.task_id) or original(msg)  # type: ignore[method-assign]
    RoutingTaskQueue(Recorder(), launcher).send_tasks([_message("fargate"), _message("lambda")])
    assert launched == ["heavy"]
    assert [m.executor for m in sent] == ["lambda"]


def test_metrics_are_emitted_as_emf_with_and_without_the_workflow_dimension(
    capsys: pytest.CaptureFixture[str],
) -> None:
    PowertoolsMetrics().count("TasksFailed", "etl")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    dimension_sets = []
    for doc in lines:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Stratoflow"
        assert directive["Metrics"][0]["Name"] == "TasksFailed"
        assert doc["TasksFailed"] == [1.0] or doc["TasksFailed"] == 1.0
        dimension_sets.append(sorted(directive["Dimensions"][0]))
    assert sorted(dimension_sets) == [["service"], ["service", "workflow"]]


def test_run_finished_is_put_on_the_event_bus(aws: AwsClients) -> None:
    events = aws.events
    events.create_event_bus(Name="ops")
    sqs = aws.sqs
    url = sqs.create_queue(QueueName="seen")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="finished", EventBusName="ops", EventPattern=json.dumps({"source": ["stratoflow"]})
    )
    events.put_targets(Rule="finished", EventBusName="ops", Targets=[{"Id": "q", "Arn": arn}])
    run = RunRecord(
        run_id="r1",
        workflow_id="wf",
        version=2,
        status=RunStatus.FAILED,
        logical_date="2026-01-01T00:00:00Z",
        created_at="2026-01-01T00:00:00Z",
        n_tasks=3,
        finished_at="2026-01-01T00:01:00Z",
    )
    EventBridgePublisher(aws, "ops").run_finished(run, ["load"])
    [msg] = sqs.receive_message(QueueUrl=url)["Messages"]
    event = json.loads(msg["Body"])
    assert (event["source"], event["detail-type"]) == ("stratoflow", "Run Finished")
    assert event["detail"]["status"] == "failed" and event["detail"]["failed_tasks"] == ["load"]


def test_cancel_stops_the_ecs_task_running_an_attempt_and_records_it_cancelled(
    aws: AwsClients,
) -> None:
    from stratoflow import bootstrap, services
    from stratoflow.aws.ecs import EcsWorkers
    from stratoflow.config import Resources, Settings
    from stratoflow.core.model import Workflow
    from stratoflow.core.records import AttemptReport
    from stratoflow.local.emulator import provision

    ecs_settings = _ecs_settings(aws)
    settings = provision(aws, Resources.named("ops"), Settings(table="ops"))
    settings = dataclasses.replace(settings, ecs=ecs_settings)
    ports = bootstrap.build_ports(settings, clients=aws)
    assert isinstance(ports.workers, EcsWorkers)
    wf = Workflow.model_validate(
        {
            "id": "heavy",
            "tasks": [
                {"id": "crunch", "command": "sleep 600", "executor": "fargate", "retries": 2}
            ],
        }
    )
    meta = services.register_workflow(ports, wf, "test")
    run, _ = services.start_run(
        ports, ports.definitions.get_plan("heavy", meta.active_version or 1)
    )
    ecs = aws.client("ecs")
    [arn] = ecs.list_tasks(cluster="stratoflow")["taskArns"]
    # what the container does first: claim the attempt, naming itself
    now = ports.clock.now()
    claim = ports.runs.claim_attempt(
        run.run_id,
        "crunch",
        1,
        now.isoformat(),
        now.timestamp() + 700,
        now.timestamp(),
        worker=arn,
    )
    assert claim.outcome.value == "claimed"
    assert ports.runs.get_task(run.run_id, "crunch").worker == arn

    assert services.cancel_run(ports, run.run_id) is True
    # the per-task work the cancel handed to the completion handler (nobody pumps here)
    services.stop_cancelled_run(ports, run.run_id)
    [task] = ecs.describe_tasks(cluster="stratoflow", tasks=[arn])["tasks"]
    assert task["desiredStatus"] == "STOPPED"
    assert run.run_id in task["stoppedReason"]
    assert services.cancel_run(ports, run.run_id) is False  # a second cancel changes nothing

    # The stopped container's attempt is later reported lost (by the lease sweep): with its
    # run cancelled it ends cancelled, not retried.
    services.record_completion(
        ports,
        AttemptReport(
            run_id=run.run_id,
            workflow_id="heavy",
            version=1,
            task_id="crunch",
            attempt=1,
            lost=True,
            error="executor lost",
        ),
    )
    rec = ports.runs.get_task(run.run_id, "crunch")
    assert (rec.status.value, rec.attempt) == ("cancelled", 1)
    assert len(ecs.list_tasks(cluster="stratoflow")["taskArns"]) == 1  # no retry launched


def test_an_attempts_log_is_read_back_from_cloudwatch_between_its_markers(
    aws: AwsClients,
) -> None:
    from stratoflow.aws.logs import END_MARKER, START_MARKER, AttemptLogReader

    logs = aws.client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/stratoflow-executor")
    logs.create_log_stream(logGroupName="/aws/lambda/stratoflow-executor", logStreamName="s1")
    lines = [
        '{"level":"INFO","message":"task message handled"}',
        START_MARKER.format(name="r1/a.task.1.log"),
        "first line",
        "second line",
        END_MARKER.format(name="r1/a.task.1.log"),
        START_MARKER.format(name="r1/b.task.1.log"),
        "still running",
    ]
    logs.put_log_events(
        logGroupName="/aws/lambda/stratoflow-executor",
        logStreamName="s1",
        logEvents=[
            {"timestamp": 1_795_000_000_000 + i, "message": line + "\n"}
            for i, line in enumerate(lines)
        ],
    )
    reader = AttemptLogReader(aws)
    ref = "cwl|/aws/lambda/stratoflow-executor|s1|{}"
    done = reader.read(ref.format("r1/a.task.1.log"))
    assert (done.found, done.text) == (True, "first line\nsecond line\n")
    running = reader.read(ref.format("r1/b.task.1.log"))
    assert (running.found, running.text) == (True, "still running\n")
    assert reader.read(ref.format("r1/c.task.1.log")).found is False
    # with the attempt's start: events before it are not even fetched
    since = ref.format("r1/a.task.1.log") + "|1795000000003"
    assert reader.read(since).found is False  # its start marker is older
    assert reader.read(ref.format("r1/b.task.1.log") + "|1795000000005").text == "still running\n"
    assert reader.read("cwl|/aws/lambda/gone|s1|x").found is False
