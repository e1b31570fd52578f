"""The dispatcher's clock: an EventBridge rule that fires every minute."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct


class DispatcherSchedule(Construct):
    """Every minute, invoke the dispatcher. A late tick is retried briefly then dropped: the
    next one (a minute later) finds the same due slots, since runs are keyed by slot."""

    def __init__(
        self, scope: Construct, construct_id: str, *, dispatcher: lambda_.IFunction, rule_name: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "EveryMinute",
            rule_name=rule_name,
            description="stratoflow: start the runs that are due",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[
                targets.LambdaFunction(
                    dispatcher, retry_attempts=2, max_event_age=Duration.minutes(2)
                )
            ],
        )
