"""`DefinitionStore` on DynamoDB: numbered workflow versions, the workflow registry, the
`due` index of schedules and the event sources' claims, links and errors."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from stratoflow.aws.clients import AwsClients
from stratoflow.aws.dynamodb.codec import _item, _plain, _set_fields
from stratoflow.aws.dynamodb.keys import _key
from stratoflow.aws.dynamodb.transactions import _applied, _code
from stratoflow.config import DEFINITIONS_PREFIX, DUE_INDEX, DUE_INDEX_PARTITION, DUE_INDEX_SORT
from stratoflow.core.model import Workflow
from stratoflow.core.plan import Plan
from stratoflow.core.records import WorkflowMeta, iso
from stratoflow.ports import DefinitionNotFound, RunDefaults

INLINE_DEFINITION_LIMIT = 300_000
"""Definitions above this size go to S3: an item may not exceed 400 KB (invariant 7)."""


class DynamoDefinitionStore:
    """Immutable, numbered workflow versions; large ones stored in S3 (invariant 7)."""

    def __init__(self, clients: AwsClients, table: str, bucket: str | None = None) -> None:
        self._clients = clients
        self.table = table
        self.bucket = bucket
        self._cache: dict[tuple[str, int], Plan] = {}
        self._defaults: dict[tuple[str, int], RunDefaults] = {}
        self._lock = threading.Lock()

    @property
    def _db(self) -> Any:
        return self._clients.dynamodb

    def save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        version = self._save_version(workflow, source, now)
        # What a trigger takes of the version, known here without parsing it back: in a
        # process that registers and triggers (local up) no trigger ever parses it.
        defaults = RunDefaults(
            dict(workflow.params), workflow.concurrency, len(workflow.tasks), workflow.timeout
        )
        with self._lock:
            self._defaults[(workflow.id, version)] = defaults
        return version

    def _save_version(self, workflow: Workflow, source: str, now: datetime) -> int:
        body = workflow.model_dump_json(exclude_defaults=False)
        digest = hashlib.sha256(body.encode()).hexdigest()
        pk = f"WF#{workflow.id}"
        while True:
            meta = self._db.get_item(
                TableName=self.table, Key=_key(pk, "META"), ConsistentRead=True
            ).get("Item")
            latest = int(meta["latest_version"]["N"]) if meta else 0
            if meta and meta.get("latest_hash", {}).get("S") == digest:
                return latest
            version = latest + 1
            item = {
                **_key(pk, f"V#{version:08d}"),
                **_item(
                    {
                        "workflow_id": workflow.id,
                        "version": version,
                        "hash": digest,
                        "source": source,
                        "created_at": iso(now),
                    }
                ),
            }
            if len(body) > INLINE_DEFINITION_LIMIT:
                if not self.bucket:
                    raise ValueError(
                        f"workflow {workflow.id!r} is {len(body)} bytes, above the "
                        f"{INLINE_DEFINITION_LIMIT}-byte item limit, and no bucket is configured"
                    )
                key = f"{DEFINITIONS_PREFIX}{workflow.id}/{version:08d}.json"
                self._clients.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode())
                item["body_s3_key"] = {"S": key}
            else:
                item["body"] = {"S": body}
            meta_condition = "latest_version = :prev" if meta else "attribute_not_exists(pk)"
            meta_values: dict[str, Any] = {":v": {"N": str(version)}, ":h": {"S": digest}}
            if meta:
                meta_values[":prev"] = {"N": str(latest)}
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": _key(pk, "META"),
                                "UpdateExpression": "SET latest_version = :v, latest_hash = :h",
                                "ConditionExpression": meta_condition,
                                "ExpressionAttributeValues": meta_values,
                            }
                        },
                    ]
                )
                return version
            except ClientError as err:
                if _code(err) != "TransactionCanceledException":
                    raise
                # Another upload registered a version first: read again and renumber.

    def get_meta(self, workflow_id: str) -> WorkflowMeta | None:
        item = self._db.get_item(
            TableName=self.table, Key=_key(f"WF#{workflow_id}", "META"), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        d = _plain(item)
        return WorkflowMeta(
            workflow_id=workflow_id,
            latest_version=int(d.get("latest_version", 0)),
            active_version=d.get("active_version"),
            paused=bool(d.get("paused", False)),
            schedule=d.get("schedule"),
            timezone=d.get("timezone", "UTC"),
            catchup=bool(d.get("catchup", False)),
            max_active_runs=int(d.get("max_active_runs", 1)),
            next_slot=d.get("next_slot"),
            active_runs=int(d.get("active_runs", 0)),
        )

    def activate(self, meta: WorkflowMeta) -> None:
        fields: dict[str, Any] = {
            "active_version": meta.active_version,
            "timezone": meta.timezone,
            "catchup": meta.catchup,
            "max_active_runs": meta.max_active_runs,
            "paused": meta.paused,
        }
        sets, names, values = _set_fields(fields)
        removes = []
        for name, value in (("schedule", meta.schedule), ("next_slot", meta.next_slot)):
            if value is None:
                removes.append(name)
            else:
                sets.append(f"#f_{name} = :f_{name}")
                names[f"#f_{name}"] = name
                values[f":f_{name}"] = {"S": value}
        removes += self._due_index_changes(meta, sets, values)
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        self._db.update_item(
            TableName=self.table,
            Key=_key(f"WF#{meta.workflow_id}", "META"),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        self._db.put_item(TableName=self.table, Item=_key("WFS", meta.workflow_id))

    def list_workflows(self) -> list[WorkflowMeta]:
        """Every registered workflow (the registry partition, not a table scan)."""
        out = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "WFS"}},
        }
        while True:
            resp = self._db.query(**kwargs)
            for item in resp.get("Items", []):
                meta = self.get_meta(item["sk"]["S"])
                if meta is not None:
                    out.append(meta)
            if not resp.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    @staticmethod
    def _due_index_changes(
        meta: WorkflowMeta, sets: list[str], values: dict[str, Any]
    ) -> list[str]:
        """Put the workflow in the sparse `due` index, or take it out; returns REMOVEs."""
        if meta.schedule and meta.next_slot and not meta.paused and meta.active_version:
            sets += [f"{DUE_INDEX_PARTITION} = :due_pk", f"{DUE_INDEX_SORT} = :due_at"]
            values[":due_pk"] = {"S": "DUE"}
            values[":due_at"] = {"S": meta.next_slot}
            return []
        return [DUE_INDEX_PARTITION, DUE_INDEX_SORT]

    def set_paused(self, workflow_id: str, paused: bool) -> bool:
        meta = self.get_meta(workflow_id)
        if meta is None:
            return False
        self.activate(replace(meta, paused=paused))
        return True

    def claim_source_event(self, source: str, event_id: str) -> bool:
        return _applied(
            self._db.put_item,
            TableName=self.table,
            Item={**_key(f"SRC#{source}", f"EV#{event_id}")},
            ConditionExpression="attribute_not_exists(pk)",
        )

    def record_source_error(self, source: str, message: str | None, now: str) -> None:
        key = _key("SRCERR", source)
        if message is None:
            self._db.delete_item(TableName=self.table, Key=key)
            return
        self._db.put_item(
            TableName=self.table,
            Item={**key, "message": {"S": message}, "at": {"S": now}},
        )

    def source_errors(self) -> list[dict[str, str]]:
        resp = self._db.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "SRCERR"}},
        )
        return [
            {"source": i["sk"]["S"], "message": i["message"]["S"], "at": i["at"]["S"]}
            for i in resp.get("Items", [])
        ]

    def link_source(self, source: str, workflow_id: str) -> None:
        self._db.put_item(
            TableName=self.table,
            Item={**_key(f"SRC#{source}", "LINK"), "workflow_id": {"S": workflow_id}},
        )
        self._db.update_item(
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression="SET active_source = :s",
            ExpressionAttributeValues={":s": {"S": source}},
        )

    def deactivate_source(self, source: str) -> str | None:
        link = self._db.get_item(
            TableName=self.table, Key=_key(f"SRC#{source}", "LINK"), ConsistentRead=True
        ).get("Item")
        if not link:
            return None
        workflow_id = link["workflow_id"]["S"]
        deactivated = _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression=(
                f"REMOVE active_version, next_slot, {DUE_INDEX_PARTITION}, {DUE_INDEX_SORT}"
            ),
            # only if that file still defines the workflow: an upload of the same workflow
            # under another name has taken over since
            ConditionExpression="active_source = :s",
            ExpressionAttributeValues={":s": {"S": source}},
        )
        return workflow_id if deactivated else None

    def due_workflows(self, now: str, limit: int) -> list[str]:
        resp = self._db.query(
            TableName=self.table,
            IndexName=DUE_INDEX,
            KeyConditionExpression=f"{DUE_INDEX_PARTITION} = :due AND {DUE_INDEX_SORT} <= :now",
            ExpressionAttributeValues={":due": {"S": "DUE"}, ":now": {"S": now}},
            Limit=limit,
        )
        return [item["pk"]["S"][3:] for item in resp.get("Items", [])]

    def advance_slot(
        self, workflow_id: str, expected: str, new: str | None, max_active: int
    ) -> bool:
        values: dict[str, Any] = {
            ":expected": {"S": expected},
            ":one": {"N": "1"},
            ":max": {"N": str(max_active)},
        }
        if new is None:
            update = "REMOVE next_slot, due_pk, due_at ADD active_runs :one"
        else:
            update = "SET next_slot = :new, due_at = :new ADD active_runs :one"
            values[":new"] = {"S": new}
        return _applied(
            self._db.update_item,
            TableName=self.table,
            Key=_key(f"WF#{workflow_id}", "META"),
            UpdateExpression=update,
            ConditionExpression=(
                "next_slot = :expected AND (attribute_not_exists(active_runs) "
                "OR active_runs < :max)"
            ),
            ExpressionAttributeValues=values,
        )

    def list_versions(self, workflow_id: str) -> list[dict[str, Any]]:
        """Every stored version of the workflow, oldest first (without their bodies)."""
        out = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :v)",
            "ExpressionAttributeValues": {":pk": {"S": f"WF#{workflow_id}"}, ":v": {"S": "V#"}},
            "ProjectionExpression": "version, created_at, #src, #h",
            "ExpressionAttributeNames": {"#src": "source", "#h": "hash"},
        }
        while True:
            resp = self._db.query(**kwargs)
            out += [_plain(item) for item in resp.get("Items", [])]
            if not resp.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def get_plan(self, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
        plan = self._cache.get(key)
        if plan is not None:
            return plan
        plan = Plan(Workflow.model_validate_json(self._body(workflow_id, version)), version)
        with self._lock:
            self._cache[key] = plan
        return plan

    def run_defaults(self, workflow_id: str, version: int) -> RunDefaults:
        # Cached like plans: a version never changes, and reading and parsing a large one
        # is what a trigger would otherwise spend its time on.
        key = (workflow_id, version)
        found = self._defaults.get(key)
        if found is None:
            found = RunDefaults.from_definition(self._body(workflow_id, version))
            with self._lock:
                self._defaults[key] = found
        return found

    def _body(self, workflow_id: str, version: int) -> str:
        item = self._db.get_item(
            TableName=self.table, Key=_key(f"WF#{workflow_id}", f"V#{version:08d}")
        ).get("Item")
        if not item:
            raise DefinitionNotFound(f"workflow {workflow_id!r} has no version {version}")
        if "body" in item:
            return str(item["body"]["S"])
        obj = self._clients.s3.get_object(Bucket=self.bucket, Key=item["body_s3_key"]["S"])
        return str(obj["Body"].read().decode())
