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

RUNNER_CONTAINER = "runner"
# The task definition's size when RunTask gives no override; a task's `cpu`/`memory`
# become task-level *and* container-level overrides (the container's hard memory limit
# would otherwise cap the task at this value).
DEFAULT_CPU = 256
DEFAULT_MEMORY_MIB = 512


class FargateExecutor(Construct):
    """A VPC without public ingress, an ECS cluster and the runner's task definition.

    With `nat_gateways=0` the tasks run in public subnets with a public IP so they can
    reach AWS APIs and the internet without a NAT gateway's hourly cost; their security
    group has no ingress rule, so nothing can connect to them. With NAT gateways they run
    in private subnets. S3 and DynamoDB traffic takes free gateway endpoints either way.
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
    ) -> None:
        super().__init__(scope, construct_id)
        public = nat_gateways == 0
        subnet_type = ec2.SubnetType.PUBLIC if public else ec2.SubnetType.PRIVATE_WITH_EGRESS
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)]
        if not public:
            subnets.append(ec2.SubnetConfiguration(name="tasks", subnet_type=subnet_type))
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=nat_gateways,
            subnet_configuration=subnets,
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
        self.container = self.task_definition.add_container(
            "Runner",
            container_name=RUNNER_CONTAINER,
            image=image,
            memory_limit_mib=DEFAULT_MEMORY_MIB,
            environment=dict(environment),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="task", log_group=self.log_group),
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
