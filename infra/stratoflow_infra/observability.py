"""Dashboard, alarms and (optionally) an SNS topic that e-mails the alarms.

The handlers emit EMF metrics through Powertools Metrics in the `Stratoflow` namespace,
each once with dimensions (service, workflow) and once with just (service): the alarms use
the latter, the dashboard shows both (per-workflow lines through a SEARCH expression).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .contract import (
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
    SERVICE_DIMENSION,
    WORKFLOW_DIMENSION,
)
from .topics import email_topic

PERIOD = Duration.minutes(5)
WIDTH = 8  # three graphs per dashboard row (24 columns)


class Observability(Construct):
    """What an operator looks at: one dashboard and the alarms that should wake someone."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        service: str,
        dashboard_name: str,
        functions: Mapping[str, lambda_.IFunction],
        api: apigateway.RestApi,
        queues: Mapping[str, sqs.IQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        task_queue: sqs.IQueue,
        oldest_task_age_alarm_seconds: int,
        alarm_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._service = service
        self._alarm_prefix = service
        self._alarm_names: list[str] = []

        self.alarms: list[cloudwatch.Alarm] = []
        for name, dlq in dead_letter_queues.items():
            self._alarm(
                f"{_pascal(name)}DeadLetterQueueNotEmpty",
                dlq.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(1), statistic="Maximum"
                ),
                threshold=1,
                description=f"Messages in the {name} dead-letter queue: inspect, then redrive.",
            )
        self._alarm(
            "RunsFailed",
            self.metric(METRIC_RUNS_FAILED),
            threshold=1,
            description="At least one workflow run failed in the last 5 minutes.",
        )
        self._alarm(
            "WorkflowLoadFailed",
            self.metric(METRIC_WORKFLOW_LOAD_FAILED),
            threshold=1,
            description="An uploaded workflow file was rejected; see its error report.",
        )
        self._alarm(
            "ExecutorErrors",
            functions["executor"].metric_errors(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="The executor function itself failed (not a task's command).",
        )
        self._alarm(
            "ApiServerErrors",
            api.metric_server_error(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="The REST API answered 5xx: the api function failed or timed out.",
        )
        self._alarm(
            "OldestTaskMessageAge",
            task_queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=oldest_task_age_alarm_seconds,
            evaluation_periods=5,
            description="Tasks wait in the queue: executor throttled, failing or too few.",
        )

        self.topic: sns.Topic | None = None
        if alarm_email:
            self.topic = self._notification_topic(alarm_email)
            for alarm in self.alarms:
                alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=dashboard_name, default_interval=Duration.hours(3)
        )
        self.dashboard.add_widgets(
            self._graph("Runs", [METRIC_RUNS_STARTED, METRIC_RUNS_SUCCEEDED, METRIC_RUNS_FAILED]),
            self._graph(
                "Tasks",
                [
                    METRIC_TASKS_SUCCEEDED,
                    METRIC_TASKS_FAILED,
                    METRIC_TASKS_RETRIED,
                    METRIC_TASKS_TIMED_OUT,
                ],
            ),
            cloudwatch.GraphWidget(
                title="Failed runs by workflow",
                left=[self._per_workflow(METRIC_RUNS_FAILED)],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            self._percentiles("Task duration (ms)", METRIC_TASK_DURATION),
            self._percentiles("Queue latency, enqueue to start (ms)", METRIC_QUEUE_LATENCY),
            cloudwatch.GraphWidget(
                title="Failed tasks by workflow",
                left=[self._per_workflow(METRIC_TASKS_FAILED)],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Queue depth (visible messages)",
                left=[
                    q.metric_approximate_number_of_messages_visible(label=n, period=PERIOD)
                    for n, q in queues.items()
                ],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Dead-letter queue depth",
                left=[
                    q.metric_approximate_number_of_messages_visible(label=n, period=PERIOD)
                    for n, q in dead_letter_queues.items()
                ],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Age of oldest message (s)",
                left=[
                    q.metric_approximate_age_of_oldest_message(label=n, period=PERIOD)
                    for n, q in queues.items()
                ],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda errors",
                left=[f.metric_errors(label=n, period=PERIOD) for n, f in functions.items()],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Lambda throttles",
                left=[f.metric_throttles(label=n, period=PERIOD) for n, f in functions.items()],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration p90 (ms)",
                left=[
                    f.metric_duration(label=n, period=PERIOD, statistic="p90")
                    for n, f in functions.items()
                ],
                width=WIDTH,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests",
                left=[
                    api.metric_count(label="requests", period=PERIOD, statistic="Sum"),
                    api.metric_client_error(label="4xx", period=PERIOD, statistic="Sum"),
                    api.metric_server_error(label="5xx", period=PERIOD, statistic="Sum"),
                ],
                width=WIDTH,
            ),
            cloudwatch.GraphWidget(
                title="API latency p90 (ms)",
                left=[
                    api.metric_latency(label="latency", period=PERIOD, statistic="p90"),
                    api.metric_integration_latency(
                        label="integration", period=PERIOD, statistic="p90"
                    ),
                ],
                width=WIDTH,
            ),
        )
        # Alarms by name-built ARN rather than by reference: the widget then does not
        # depend on the alarm resources (which emulators such as moto do not create).
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms",
                alarms=[
                    cloudwatch.Alarm.from_alarm_arn(
                        self,
                        f"{name}Ref",
                        Stack.of(self).format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=name,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        ),
                    )
                    for name in self._alarm_names
                ],
                width=3 * WIDTH,
            )
        )

    def metric(self, name: str, statistic: str = "Sum") -> cloudwatch.Metric:
        """A stratoflow metric aggregated over all workflows (dimension: service only)."""
        return cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={SERVICE_DIMENSION: self._service},
            statistic=statistic,
            period=PERIOD,
        )

    def _per_workflow(self, name: str) -> cloudwatch.MathExpression:
        return cloudwatch.MathExpression(
            expression=(
                f"SEARCH('{{{METRICS_NAMESPACE},{SERVICE_DIMENSION},{WORKFLOW_DIMENSION}}} "
                f'MetricName="{name}" {SERVICE_DIMENSION}="{self._service}"\', '
                f"'Sum', {int(PERIOD.to_seconds())})"
            ),
            using_metrics={},
            label=name,
            period=PERIOD,
        )

    def _graph(self, title: str, names: list[str]) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title, left=[self.metric(name).with_(label=name) for name in names], width=WIDTH
        )

    def _percentiles(self, title: str, name: str) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(
            title=title,
            left=[
                self.metric(name, statistic).with_(label=statistic)
                for statistic in ("p50", "p90", "Maximum")
            ],
            width=WIDTH,
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
    ) -> cloudwatch.Alarm:
        name = f"{self._alarm_prefix}-{construct_id}"
        self._alarm_names.append(name)
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=name,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms.append(alarm)
        return alarm

    def _notification_topic(self, email: str) -> sns.Topic:
        return email_topic(
            self,
            "AlarmTopic",
            publisher="cloudwatch.amazonaws.com",
            description="stratoflow alarm notifications",
            display_name="stratoflow alarms",
            email=email,
        )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def dashboard_url(dashboard_name: str) -> str:
    """Console address of the dashboard (tokens resolve at deploy time)."""
    return (
        f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}"
        f"#dashboards:name={dashboard_name}"
    )
