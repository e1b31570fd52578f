"""The REST API: API Gateway in front of the `api` function, every method signed (SigV4)."""

from __future__ import annotations

import json
import re

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stratoflow.config import API_ROUTES

UPLOAD = ("POST", "/workflows")
"""An upload: the body is the workflow file's text, query `name` its file name."""
START_RUN = ("POST", "/workflows/{workflow_id}/runs")
"""Starts a run now; its body is a JSON object with optional string `params`."""
REQUIRED_QUERY_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {UPLOAD: ("name",)}
STAGE_NAME = "v1"
JSON = "application/json"

# One JSON object per request. `userArn` is who signed it; `error` says why API Gateway
# refused it (bad signature, missing permission, throttled, invalid body) before Lambda ran.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
    "userArn": "$context.identity.userArn",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "error": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}

_PATH_PARAMETER = re.compile(r"\{([A-Za-z0-9_]+)\}")


def request_parameters(method: str, path: str) -> dict[str, bool]:
    """The parameters API Gateway must find before it calls the function: every path
    parameter of `path` and the method's required query parameters."""
    required = {f"method.request.path.{name}": True for name in _PATH_PARAMETER.findall(path)}
    for name in REQUIRED_QUERY_PARAMETERS.get((method, path), ()):
        required[f"method.request.querystring.{name}"] = True
    return required


class StratoflowApi(Construct):
    """A regional REST API whose every method requires IAM authorization (SigV4): callers
    need `execute-api:Invoke` on it. Throttled at the stage, access-logged as JSON,
    execution errors and X-Ray traces on, requests validated before the function runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: lambda_.IFunction,
        api_name: str,
        throttle_rate_limit: int,
        throttle_burst_limit: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=f"/aws/apigateway/{api_name}/access",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.api = apigateway.RestApi(
            self,
            "Api",
            rest_api_name=api_name,
            description="stratoflow: workflows and runs (IAM-authorized)",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Execution logging needs the account's API Gateway CloudWatch role. The role
            # and that account setting outlive the stack (CDK's default): other APIs in
            # the account may log through them too.
            cloud_watch_role=True,
            default_method_options=apigateway.MethodOptions(
                authorization_type=apigateway.AuthorizationType.IAM
            ),
            # The deployment is made below, after the methods: see _deployment.
            deploy=False,
        )
        self.validator = self.api.add_request_validator(
            "RequestValidator",
            request_validator_name="parameters-and-body",
            validate_request_parameters=True,
            validate_request_body=True,
        )
        self.start_run_model = self.api.add_model(
            "StartRunModel",
            content_type=JSON,
            model_name="StartRun",
            description="Body of POST /workflows/{workflow_id}/runs",
            schema=apigateway.JsonSchema(
                schema=apigateway.JsonSchemaVersion.DRAFT4,
                title="StartRun",
                type=apigateway.JsonSchemaType.OBJECT,
                properties={
                    "params": apigateway.JsonSchema(
                        type=apigateway.JsonSchemaType.OBJECT,
                        additional_properties=apigateway.JsonSchema(
                            type=apigateway.JsonSchemaType.STRING
                        ),
                    )
                },
            ),
        )
        integration = apigateway.LambdaIntegration(handler, proxy=True, allow_test_invoke=False)
        self.methods: dict[tuple[str, str], apigateway.Method] = {}
        for method, path in API_ROUTES:
            self.methods[(method, path)] = self.api.root.resource_for_path(path).add_method(
                method,
                integration,
                authorization_type=apigateway.AuthorizationType.IAM,
                request_parameters=request_parameters(method, path),
                request_models=(
                    {JSON: self.start_run_model} if (method, path) == START_RUN else None
                ),
                request_validator=self.validator,
            )
        self.stage = apigateway.Stage(
            self,
            "Stage",
            deployment=self._deployment(),
            stage_name=STAGE_NAME,
            throttling_rate_limit=throttle_rate_limit,
            throttling_burst_limit=throttle_burst_limit,
            access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
            access_log_format=apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
            # Errors only, and never request or response bodies (workflow files).
            logging_level=apigateway.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,
            metrics_enabled=True,
            tracing_enabled=True,
        )
        self.api.deployment_stage = self.stage
        # API Gateway would create the execution log group itself, without retention.
        self.execution_logs = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"API-Gateway-Execution-Logs_{self.api.rest_api_id}/{STAGE_NAME}",
            retention=log_retention,
            removal_policy=removal_policy,
        )

    def _deployment(self) -> apigateway.Deployment:
        """The API's deployment, made after the methods rather than by RestApi.

        RestApi's own deployment precedes the methods in the template. CloudFormation
        orders by dependency, so that is harmless there, but emulators that create a new
        stack's resources in template order (moto, for the deploy rehearsal) then deploy an
        API without methods, which API Gateway refuses. The deployment depends on every
        method (RestApi attaches them); its logical id hashes what the methods, the model
        and the validator are, so that any change to them deploys anew, as RestApi's would.
        """
        deployment = apigateway.Deployment(
            self, "Deployment", api=self.api, description="stratoflow REST API"
        )
        for cfn_method in (m.node.default_child for m in self.methods.values()):
            assert isinstance(cfn_method, apigateway.CfnMethod)
            deployment.add_to_logical_id(
                {
                    "httpMethod": cfn_method.http_method,
                    "resourceId": cfn_method.resource_id,
                    "authorizationType": cfn_method.authorization_type,
                    "requestParameters": cfn_method.request_parameters,
                    "requestModels": cfn_method.request_models,
                    "requestValidatorId": cfn_method.request_validator_id,
                    "integration": cfn_method.integration,
                }
            )
        model = self.start_run_model.node.default_child
        validator = self.validator.node.default_child
        assert isinstance(model, apigateway.CfnModel)
        assert isinstance(validator, apigateway.CfnRequestValidator)
        deployment.add_to_logical_id({"model": model.schema, "contentType": model.content_type})
        deployment.add_to_logical_id(
            {
                "validateBody": validator.validate_request_body,
                "validateParameters": validator.validate_request_parameters,
            }
        )
        return deployment

    @property
    def url(self) -> str:
        """The stage's base URL, ending in `/`."""
        return self.api.url
