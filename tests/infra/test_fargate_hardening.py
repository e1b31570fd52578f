"""The Fargate runner is hardened: not root, a read-only root filesystem with /tmp as its
one writable (ephemeral) path, and, when asked, private subnets without public IPs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import REPO_ROOT, Synthesized, synthesize


def _runner(synth: Synthesized) -> tuple[dict[str, Any], dict[str, Any]]:
    [task_definition] = synth.resources("AWS::ECS::TaskDefinition").values()
    [container] = task_definition["Properties"]["ContainerDefinitions"]
    return task_definition["Properties"], container


def _subnet_types(synth: Synthesized) -> set[str]:
    """The `aws-cdk:subnet-type` tags of the VPC's subnets."""
    found = set()
    for subnet in synth.resources("AWS::EC2::Subnet").values():
        for tag in subnet["Properties"].get("Tags", []):
            if tag["Key"] == "aws-cdk:subnet-type":
                found.add(tag["Value"])
    return found


def _launch_subnets(synth: Synthesized) -> list[Any]:
    return list(synth.stack.fargate.subnets.subnets)


def test_the_runner_runs_as_a_non_root_user_on_a_read_only_root_filesystem(
    synth: Synthesized,
) -> None:
    _, container = _runner(synth)
    assert container["ReadonlyRootFilesystem"] is True
    uid, _, gid = container["User"].partition(":")
    assert int(uid) != 0 and int(gid) != 0


def test_tmp_is_a_writable_ephemeral_volume_and_where_commands_and_logs_go(
    synth: Synthesized,
) -> None:
    properties, container = _runner(synth)
    volumes = {v["Name"]: v for v in properties["Volumes"]}
    [mount] = container["MountPoints"]
    assert mount["ContainerPath"] == "/tmp" and mount["ReadOnly"] is False
    # A bind mount on the task's ephemeral storage: no host path, no EFS, no Docker volume.
    assert set(volumes[mount["SourceVolume"]]) == {"Name"}
    assert container["WorkingDirectory"] == "/tmp"
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    # No log folder is configured: the runner writes each attempt's log under the
    # temporary directory, /tmp (TMPDIR in the image; Python's fallback in any other).
    assert "STRATOFLOW_LOG_DIR" not in env


def test_the_image_runs_as_the_same_unprivileged_user_with_tmp_as_a_volume() -> None:
    dockerfile = (REPO_ROOT / "infra" / "runner" / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user == "10001:10001"
    assert re.search(r"--uid 10001 --gid 10001", dockerfile)
    assert re.search(r'^VOLUME \["/tmp"\]$', dockerfile, re.MULTILINE)
    assert re.search(r"^WORKDIR /tmp$", dockerfile, re.MULTILINE)
    assert re.search(r"^ENV HOME=/tmp TMPDIR=/tmp$", dockerfile, re.MULTILINE)


def test_by_default_tasks_run_in_public_subnets_with_a_public_ip(synth: Synthesized) -> None:
    assert synth.stack.fargate.assign_public_ip == "ENABLED"
    assert _subnet_types(synth) == {"Public"}
    assert synth.stack.fargate.launcher_environment()["STRATOFLOW_ECS_ASSIGN_PUBLIC_IP"] == (
        "ENABLED"
    )


@pytest.fixture(scope="module")
def synth_private(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Private subnets and no NAT gateway: the runner reaches AWS through endpoints."""
    return synthesize(
        tmp_path_factory.mktemp("cdk-private"), **{"stratoflow:fargateSubnets": "private"}
    )


def test_private_subnets_without_nat_run_tasks_without_a_public_ip_through_endpoints(
    synth_private: Synthesized,
) -> None:
    fargate = synth_private.stack.fargate
    assert fargate.assign_public_ip == "DISABLED"
    assert fargate.launcher_environment()["STRATOFLOW_ECS_ASSIGN_PUBLIC_IP"] == "DISABLED"
    # No public subnet, no internet gateway, no NAT: no way out but the endpoints.
    assert _subnet_types(synth_private) == {"Isolated"}
    synth_private.template.resource_count_is("AWS::EC2::InternetGateway", 0)
    synth_private.template.resource_count_is("AWS::EC2::NatGateway", 0)
    endpoints = synth_private.resources("AWS::EC2::VPCEndpoint").values()
    assert _services(endpoints) == {
        "s3",
        "dynamodb",
        "ecr.api",
        "ecr.dkr",
        "logs",
        "sqs",
        "sts",
        "ssm",
        "secretsmanager",
    }
    interface = [e for e in endpoints if e["Properties"]["VpcEndpointType"] == "Interface"]
    assert all(e["Properties"]["PrivateDnsEnabled"] is True for e in interface)
    # The launcher's subnets are the isolated ones.
    assert {s.subnet_id for s in _launch_subnets(synth_private)} == {
        s.subnet_id for s in fargate.vpc.isolated_subnets
    }


def test_private_subnets_with_a_nat_gateway_route_out_through_it(
    synth_custom: Synthesized,
) -> None:
    """natGateways ≥ 1 implies private subnets (the setting's default with NAT)."""
    fargate = synth_custom.stack.fargate
    assert fargate.assign_public_ip == "DISABLED"
    synth_custom.template.resource_count_is("AWS::EC2::NatGateway", 1)
    assert _subnet_types(synth_custom) == {"Public", "Private"}
    assert {s.subnet_id for s in _launch_subnets(synth_custom)} == {
        s.subnet_id for s in fargate.vpc.private_subnets
    }
    endpoints = synth_custom.resources("AWS::EC2::VPCEndpoint").values()
    assert {e["Properties"]["VpcEndpointType"] for e in endpoints} == {"Gateway"}


@pytest.mark.parametrize("value", ["isolated", "", 1])
def test_an_unknown_subnet_setting_is_refused_naming_it(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match="fargateSubnets must be one of public, private"):
        synthesize(tmp_path, **{"stratoflow:fargateSubnets": value})


def _services(endpoints: Any) -> set[str]:
    """Each endpoint's service: `com.amazonaws.<region>.<service>` without its prefix."""
    return {
        _join(e["Properties"]["ServiceName"]).removeprefix("com.amazonaws.*.") for e in endpoints
    }


def _join(value: Any) -> str:
    """The text of an Fn::Join of strings and references (references as '*')."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(_join(p) for p in parts)
    return "*"
