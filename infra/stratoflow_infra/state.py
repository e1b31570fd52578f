"""The DynamoDB table that holds workflow definitions and run state."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from stratoflow.config import (
    TABLE_ATTRIBUTES,
    TABLE_INDEXES,
    TABLE_KEY_SCHEMA,
    TABLE_TTL_ATTRIBUTE,
)

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


def _key_attribute(key_type: str, schema: list[dict[str, str]] | None = None) -> dynamodb.Attribute:
    """The key of `key_type` (HASH or RANGE) in `schema` (the table's by default), as
    stratoflow.config defines it."""
    keys = TABLE_KEY_SCHEMA if schema is None else schema
    name = next(key["AttributeName"] for key in keys if key["KeyType"] == key_type)
    kind = next(a["AttributeType"] for a in TABLE_ATTRIBUTES if a["AttributeName"] == name)
    return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[kind])


class StateTable(Construct):
    """On-demand, encrypted, point-in-time recoverable; finished runs expire through TTL."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table_name: str,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=table_name,
            partition_key=_key_attribute("HASH"),
            sort_key=_key_attribute("RANGE"),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=TABLE_TTL_ATTRIBUTE,
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
            removal_policy=removal_policy,
        )
        for index in TABLE_INDEXES:
            schema = index["KeySchema"]
            assert isinstance(schema, list)
            self.table.add_global_secondary_index(
                index_name=str(index["IndexName"]),
                partition_key=_key_attribute("HASH", schema),
                sort_key=_key_attribute("RANGE", schema),
                projection_type=dynamodb.ProjectionType.KEYS_ONLY,
            )
