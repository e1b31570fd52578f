"""The Fargate executor: where `executor: fargate` tasks run, started with ecs:RunTask."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from .contract import (
    ENV_ECS_ASSIGN_PUBLIC_IP,
    ENV_ECS_CLUSTER,
    ENV_ECS_CONTAINER,
    ENV_ECS_SECURITY_GROUPS,
    ENV_ECS_SUBNETS,
    ENV_ECS_TASK_DEFINITION,
)
from .nag import acknowledge

RUNNER_CONTAINER = "runner"
RUNNER_USER = "10001:10001"
"""The runner's uid:gid (infra/runner/Dockerfile creates them): never root, whatever the
image says."""
SCRATCH = "/tmp"
"""The one writable path of the runner's read-only root filesystem: an ephemeral volume
that holds the attempt's log files, the commands' working directory and HOME."""
# What the runner calls when its subnets have no route out (private, no NAT): pulling the
# image (ECR's API and registry; its layers come from S3 through the gateway endpoint), its
# logs, the completion queue, a task's role (STS) and secrets (SSM, Secrets Manager).
# DynamoDB and S3 have gateway endpoints in every VPC of the stack.
_INTERFACE_ENDPOINTS = {
    "Ecr": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}
# The task definition's size when RunTask gives no override; a task's `cpu`/`memory`
# become task-level *and* container-level overrides (the container's hard memory limit
# would otherwise cap the task at this value).
DEFAULT_CPU = 256
DEFAULT_MEMORY_MIB = 512


class FargateExecutor(Construct):
    """A VPC without public ingress, an ECS cluster and the runner's task definition.

    `subnets="public"`: the tasks run in public subnets with a public IP so they can reach
    AWS APIs and the internet without a NAT gateway's hourly cost; their security group
    has no ingress rule, so nothing can connect to them. `subnets="private"`: private
    subnets, no public IP; out through the NAT gateways if there are any, else only to the
    AWS services the runner needs, through interface endpoints (commands then reach no
    internet). S3 and DynamoDB traffic takes free gateway endpoints either way.

    The runner runs as an unprivileged user on a read-only root filesystem; /tmp, an
    ephemeral volume, is the only place it and its commands can write.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        image: ecs.ContainerImage,
        environment: Mapping[str, str],
        nat_gateways: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        subnets: str = "public",
    ) -> None:
        super().__init__(scope, construct_id)
        if subnets not in ("public", "private"):
            raise ValueError(f"subnets must be public or private, got {subnets!r}")
        public = subnets == "public"
        if public:
            subnet_type = ec2.SubnetType.PUBLIC
        elif nat_gateways:
            subnet_type = ec2.SubnetType.PRIVATE_WITH_EGRESS
        else:
            subnet_type = ec2.SubnetType.PRIVATE_ISOLATED
        layout = []
        if public or nat_gateways:  # a NAT gateway lives in a public subnet
            layout.append(ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC))
        if not public:
            layout.append(ec2.SubnetConfiguration(name="tasks", subnet_type=subnet_type))
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=nat_gateways,
            subnet_configuration=layout,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                ),
            },
        )
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs)
        )
        if subnet_type is ec2.SubnetType.PRIVATE_ISOLATED:
            for name, service in _INTERFACE_ENDPOINTS.items():
                # Private DNS: the SDKs' usual endpoint names resolve to the endpoint. Its
                # security group admits HTTPS from the VPC only.
                endpoint = self.vpc.add_interface_endpoint(
                    name, service=service, private_dns_enabled=True
                )
                acknowledge(
                    endpoint,
                    "AwsSolutions-EC23",
                    "The endpoint's security group admits HTTPS from the VPC's own CIDR block "
                    "(a token at synth time, which the rule cannot read), not from anywhere.",
                )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="stratoflow Fargate tasks: no ingress, egress to AWS APIs and the web",
            allow_all_outbound=True,
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=DEFAULT_CPU,
            memory_limit_mib=DEFAULT_MEMORY_MIB,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy
        )
        self.task_definition.add_volume(name="scratch")  # task storage: gone with the task
        self.container = self.task_definition.add_container(
            "Runner",
            container_name=RUNNER_CONTAINER,
            image=image,
            memory_limit_mib=DEFAULT_MEMORY_MIB,
            # The image sets HOME and TMPDIR to /tmp; the runner's default log folder is
            # under the temporary directory, which is /tmp for any image.
            environment=dict(environment),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="task", log_group=self.log_group),
            user=RUNNER_USER,
            readonly_root_filesystem=True,
            working_directory=SCRATCH,
        )
        self.container.add_mount_points(
            ecs.MountPoint(source_volume="scratch", container_path=SCRATCH, read_only=False)
        )
        self.subnets = self.vpc.select_subnets(subnet_type=subnet_type)
        self.assign_public_ip = "ENABLED" if public else "DISABLED"

    def launcher_environment(self) -> dict[str, str]:
        """What a function needs to start a runner task with RunTask."""
        return {
            ENV_ECS_CLUSTER: self.cluster.cluster_arn,
            ENV_ECS_TASK_DEFINITION: self.task_definition.task_definition_arn,
            ENV_ECS_SUBNETS: ",".join(self.subnets.subnet_ids),
            ENV_ECS_SECURITY_GROUPS: self.security_group.security_group_id,
            ENV_ECS_CONTAINER: RUNNER_CONTAINER,
            ENV_ECS_ASSIGN_PUBLIC_IP: self.assign_public_ip,
        }
