"""One source of names: the stack sets every variable a handler reads (stratoflow.config)."""

from __future__ import annotations

import pytest
from stratoflow_infra.contract import (
    ENV_RUN_RETENTION_DAYS,
    FARGATE_ENV_VARS,
    FARGATE_LAUNCHERS,
    METRICS_NAMESPACE,
)
from stratoflow_infra.functions import LAMBDA_PROVIDED_ENV_VARS, handler_environment

from stratoflow.config import HANDLER_ENV_VARS

from .conftest import Synthesized

POWERTOOLS = {
    "POWERTOOLS_SERVICE_NAME": "stratoflow",
    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    "LOG_LEVEL": "INFO",
}


def environment(synth: Synthesized, function: str) -> dict:
    resource = synth.json["Resources"][synth.logical_id(synth.stack.functions[function].function)]
    return resource["Properties"]["Environment"]["Variables"]


def test_every_handler_in_the_contract_is_deployed(synth: Synthesized) -> None:
    assert set(synth.stack.functions) == set(HANDLER_ENV_VARS)


@pytest.mark.parametrize("function", sorted(HANDLER_ENV_VARS))
def test_stack_sets_every_variable_the_handler_reads(synth: Synthesized, function: str) -> None:
    variables = environment(synth, function)
    for name in HANDLER_ENV_VARS[function]:
        if name in LAMBDA_PROVIDED_ENV_VARS:
            continue
        assert name in variables, f"{function} reads {name} but the stack does not set it"
        assert variables[name] not in ("", None)


@pytest.mark.parametrize("function", sorted(HANDLER_ENV_VARS))
def test_stack_sets_nothing_beyond_the_contract_and_powertools(
    synth: Synthesized, function: str
) -> None:
    allowed = set(HANDLER_ENV_VARS[function]) | set(POWERTOOLS)
    if function in FARGATE_LAUNCHERS:
        allowed |= set(FARGATE_ENV_VARS) | {ENV_RUN_RETENTION_DAYS}
    assert set(environment(synth, function)) <= allowed


@pytest.mark.parametrize("function", sorted(HANDLER_ENV_VARS))
def test_powertools_is_configured_through_the_environment(
    synth: Synthesized, function: str
) -> None:
    variables = environment(synth, function)
    assert {k: variables[k] for k in POWERTOOLS} == POWERTOOLS


@pytest.mark.parametrize("function", FARGATE_LAUNCHERS)
def test_functions_that_start_fargate_tasks_know_where_to_run_them(
    synth: Synthesized, function: str
) -> None:
    variables = environment(synth, function)
    for name in FARGATE_ENV_VARS:
        assert name in variables
    assert variables["STRATOFLOW_ECS_CONTAINER"] == "runner"
    assert variables["STRATOFLOW_ECS_ASSIGN_PUBLIC_IP"] == "ENABLED"
    assert variables[ENV_RUN_RETENTION_DAYS] == "30"


def test_fargate_runner_gets_the_executors_settings(synth: Synthesized) -> None:
    task_definition = synth.resources("AWS::ECS::TaskDefinition")
    (resource,) = task_definition.values()
    (container,) = resource["Properties"]["ContainerDefinitions"]
    names = {variable["Name"] for variable in container["Environment"]}
    expected = set(HANDLER_ENV_VARS["executor"]) - LAMBDA_PROVIDED_ENV_VARS
    assert expected | set(POWERTOOLS) == names


def test_service_name_follows_the_prefix(synth_custom: Synthesized) -> None:
    for function in synth_custom.stack.functions.values():
        resource = synth_custom.json["Resources"][synth_custom.logical_id(function.function)]
        variables = resource["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == "acme-flow"


def test_a_variable_the_stack_cannot_provide_fails_the_synth() -> None:
    with pytest.raises(ValueError, match="STRATOFLOW_NOT_PROVIDED"):
        handler_environment("loader", {}, extra=["STRATOFLOW_NOT_PROVIDED"])
