"""The stack's event bus, on which every finished run is announced, and the optional e-mail
for failed runs.

The engine (dispatcher, completion handler, API) puts one event per finished run: source
`stratoflow`, detail-type `Run Finished`, detail `{workflow_id, run_id, status,
failed_tasks, ...}`. Anyone may add rules to the bus; the stack adds one only when asked
for failed-run e-mails.
"""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from .contract import EVENT_RUN_FINISHED, EVENT_SOURCE, RunStatus
from .topics import email_topic

EVENTS_PRINCIPAL = "events.amazonaws.com"
FAILED_RUN_PATTERN = events.EventPattern(
    source=[EVENT_SOURCE],
    detail_type=[EVENT_RUN_FINISHED],
    detail={"status": [RunStatus.FAILED.value]},
)


class RunEvents(Construct):
    """An EventBridge bus named `bus_name`; with `failed_run_email`, an encrypted, TLS-only
    SNS topic e-mailing that address and a rule sending it every failed run's event."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bus_name: str,
        failed_run_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(
            self, "Bus", event_bus_name=bus_name, description="stratoflow: finished runs"
        )
        cfn_bus = self.bus.node.default_child
        assert isinstance(cfn_bus, events.CfnEventBus)
        self.bus_name: str = cfn_bus.attr_name
        """The bus's name for the functions and the outputs. `Fn::GetAtt Name` rather than
        `Ref` (also the name): moto's CloudFormation resolves a bus's Ref to no string."""
        self.topic: sns.Topic | None = None
        self.failed_runs_rule: events.Rule | None = None
        if failed_run_email:
            self.topic = self._failed_run_topic(failed_run_email)
            self.failed_runs_rule = events.Rule(
                self,
                "FailedRuns",
                rule_name=f"{bus_name}-failed-runs",
                description="stratoflow: e-mail every failed run",
                event_bus=self.bus,
                event_pattern=FAILED_RUN_PATTERN,
                targets=[TopicOfOneRule(self.topic)],
            )
            # EventBridge may publish on behalf of this rule only: without the condition,
            # any account's rule could send to the topic (the confused-deputy problem).
            self.topic.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal(EVENTS_PRINCIPAL)],
                    actions=["sns:Publish"],
                    resources=[self.topic.topic_arn],
                    conditions={"ArnEquals": {"aws:SourceArn": self.failed_runs_rule.rule_arn}},
                )
            )

    def _failed_run_topic(self, email: str) -> sns.Topic:
        return email_topic(
            self,
            "FailedRunTopic",
            publisher=EVENTS_PRINCIPAL,
            description="stratoflow failed-run notifications",
            display_name="stratoflow failed runs",
            email=email,
        )


@jsii.implements(events.IRuleTarget)
class TopicOfOneRule:
    """An SNS topic as a rule's target, without the topic policy `aws_events_targets.SnsTopic`
    adds (it lets EventBridge publish for any rule): RunEvents writes a narrower one."""

    def __init__(self, topic: sns.ITopic) -> None:
        self._topic = topic

    def bind(self, _rule: Any, _id: str | None = None) -> events.RuleTargetConfig:
        """Called by the rule: the target's ARN, and no role (the topic policy allows)."""
        return events.RuleTargetConfig(arn=self._topic.topic_arn)
