"""The workflows bucket: uploads under workflows/ register workflows through the loader."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stratoflow.config import WORKFLOWS_PREFIX

from .contract import WORKFLOW_FILE_SUFFIXES

_NOTIFIED_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
OBJECT_READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
OBJECT_WRITE_ACTIONS = ("s3:PutObject",)


class WorkflowsBucket(Construct):
    """Versioned, encrypted, TLS-only bucket with public access blocked and access logging.

    `grantable` is the bucket as the functions' grants should see it: addressed by its name
    rather than by a reference to the bucket resource. The bucket's notification
    configuration depends on the loader function (and so on its role's policy); if that
    policy referred to the bucket resource, CloudFormation would face a cycle. Building the
    ARN from the name breaks it, and lets S3 call the loader natively, without the
    Lambda-backed custom resource that `Bucket.add_event_notification` deploys.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal_policy,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="workflows-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90)),
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7)),
            ],
            removal_policy=removal_policy,
        )
        self.grantable = s3.Bucket.from_bucket_name(self, "ByName", bucket_name)

    def notify_loader(self, loader: lambda_.IFunction) -> None:
        """Created and removed workflow files under workflows/ invoke `loader`."""
        permission = lambda_.CfnPermission(
            self,
            "LoaderInvokePermission",
            action="lambda:InvokeFunction",
            function_name=loader.function_arn,
            principal="s3.amazonaws.com",
            source_account=Aws.ACCOUNT_ID,
            source_arn=self.grantable.bucket_arn,
        )
        cfn_bucket: s3.CfnBucket = self.bucket.node.default_child  # type: ignore[assignment]
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            lambda_configurations=[
                s3.CfnBucket.LambdaConfigurationProperty(
                    event=event,
                    function=loader.function_arn,
                    filter=s3.CfnBucket.NotificationFilterProperty(
                        s3_key=s3.CfnBucket.S3KeyFilterProperty(
                            rules=[
                                s3.CfnBucket.FilterRuleProperty(
                                    name="prefix", value=WORKFLOWS_PREFIX
                                ),
                                s3.CfnBucket.FilterRuleProperty(name="suffix", value=suffix),
                            ]
                        )
                    ),
                )
                for event in _NOTIFIED_EVENTS
                for suffix in WORKFLOW_FILE_SUFFIXES
            ]
        )
        # S3 checks that it may invoke the function when the configuration is written.
        cfn_bucket.add_resource_dependency(permission)

    def grant_read_objects(self, grantee: iam.IGrantable, prefix: str) -> iam.Grant:
        """Read objects (any version) under `prefix`. No listing: the functions read keys
        they are given, so a missing object reads as AccessDenied rather than NoSuchKey."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(OBJECT_READ_ACTIONS),
            resource_arns=[self.grantable.arn_for_objects(f"{prefix}*")],
        )

    def grant_write_objects(self, grantee: iam.IGrantable, prefix: str) -> iam.Grant:
        """Create or overwrite objects under `prefix` (no delete, no ACL, no tagging)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(OBJECT_WRITE_ACTIONS),
            resource_arns=[self.grantable.arn_for_objects(f"{prefix}*")],
        )
