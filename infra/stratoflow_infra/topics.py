"""An e-mail topic that an AWS service publishes to, encrypted with a key of its own."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


def email_topic(
    scope: Construct,
    construct_id: str,
    *,
    publisher: str,
    description: str,
    display_name: str,
    email: str,
) -> sns.Topic:
    """A topic (`construct_id`) subscribed by `email`, under a rotated KMS key
    (`<construct_id>Key`) that the `publisher` service principal may use: services such as
    CloudWatch and EventBridge cannot publish to a topic under the AWS managed SNS key."""
    key = kms.Key(scope, f"{construct_id}Key", description=description, enable_key_rotation=True)
    key.grant(iam.ServicePrincipal(publisher), "kms:Decrypt", "kms:GenerateDataKey")
    topic = sns.Topic(
        scope, construct_id, display_name=display_name, master_key=key, enforce_ssl=True
    )
    topic.add_subscription(subscriptions.EmailSubscription(email))
    return topic
