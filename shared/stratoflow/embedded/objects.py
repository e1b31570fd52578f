"""Objects of the embedded engine: the S3 subset the engine uses, on the engine's SQLite file.

`EmbeddedS3` answers the boto3 S3 client's calls the loader, the definition store and the
local server make (same names, arguments and response shapes). Buckets need no creating:
an object's bucket is a column of the `objects` table.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

from stratoflow.embedded.db import Database

MAX_KEYS = 1000
CONTENT_TYPE = "binary/octet-stream"


class NoSuchKey(LookupError):
    """The object does not exist (S3's `NoSuchKey`, or 404 for a HEAD)."""


class _Exceptions:
    """`client.exceptions`-style access, as code written for boto3 expects."""

    NoSuchKey = NoSuchKey


def _bytes(body: bytes | bytearray | memoryview | str | BinaryIO) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    data = body.read()
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def _meta(etag: str, size: int, version_id: str, modified_at: float) -> dict[str, Any]:
    return {
        "ETag": etag,
        "ContentLength": size,
        "ContentType": CONTENT_TYPE,
        "VersionId": version_id,
        "LastModified": datetime.fromtimestamp(modified_at, UTC),
    }


class EmbeddedS3:
    """A boto3-S3-client-shaped object store on the engine's SQLite database."""

    exceptions = _Exceptions

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_bucket(self, Bucket: str, **_: Any) -> dict[str, Any]:
        """Nothing to do: buckets exist as soon as an object is put in them."""
        return {"Location": f"/{Bucket}"}

    def head_bucket(self, Bucket: str, **_: Any) -> dict[str, Any]:
        """Every bucket exists (see `create_bucket`)."""
        return {}

    def put_object(
        self, Bucket: str, Key: str, Body: bytes | bytearray | str | BinaryIO = b"", **_: Any
    ) -> dict[str, Any]:
        """Store (or replace) an object; each put is a new version."""
        data = _bytes(Body)
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        version_id = uuid.uuid4().hex
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO objects (bucket, key, body, etag, version_id, "
                "modified_at) VALUES (?, ?, ?, ?, ?, ?)",
                (Bucket, Key, data, etag, version_id, time.time()),
            )
        return {"ETag": etag, "VersionId": version_id}

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        """The object, its body as a file-like (`.read()`); raises `NoSuchKey`."""
        row = (
            self.db.connection()
            .execute(
                "SELECT body, etag, version_id, modified_at FROM objects "
                "WHERE bucket = ? AND key = ?",
                (Bucket, Key),
            )
            .fetchone()
        )
        if row is None:
            raise NoSuchKey(f"no object {Key!r} in bucket {Bucket!r} ({self.db.path})")
        body, etag, version_id, modified_at = row
        return {"Body": io.BytesIO(body), **_meta(etag, len(body), version_id, modified_at)}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        """The object's metadata without its body; raises `NoSuchKey`."""
        row = (
            self.db.connection()
            .execute(
                "SELECT length(body), etag, version_id, modified_at FROM objects "
                "WHERE bucket = ? AND key = ?",
                (Bucket, Key),
            )
            .fetchone()
        )
        if row is None:
            raise NoSuchKey(f"no object {Key!r} in bucket {Bucket!r} ({self.db.path})")
        size, etag, version_id, modified_at = row
        return _meta(etag, size, version_id, modified_at)

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        """Delete an object; deleting a missing one is fine (as in S3)."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (Bucket, Key))
        return {}

    def list_objects_v2(
        self,
        Bucket: str,
        Prefix: str = "",
        MaxKeys: int = MAX_KEYS,
        ContinuationToken: str | None = None,
        StartAfter: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """Objects whose key starts with `Prefix`, by key, at most `MaxKeys` a page (then
        `IsTruncated` and `NextContinuationToken`). "Contents" is omitted when there are
        none, as S3 does."""
        after = ContinuationToken or StartAfter or ""
        # Keys compare as UTF-8 bytes in SQLite, the same order as Python's str ordering,
        # so the rows starting with the prefix are one contiguous run from it.
        cursor = self.db.connection().execute(
            "SELECT key, length(body), etag, modified_at FROM objects "
            "WHERE bucket = ? AND key >= ? AND key > ? ORDER BY key",
            (Bucket, Prefix, after),
        )
        contents: list[Mapping[str, Any]] = []
        truncated = False
        for key, size, etag, modified_at in cursor:
            if not key.startswith(Prefix):
                break
            if len(contents) >= MaxKeys:
                truncated = True
                break
            contents.append(
                {
                    "Key": key,
                    "Size": size,
                    "ETag": etag,
                    "LastModified": datetime.fromtimestamp(modified_at, UTC),
                    "StorageClass": "STANDARD",
                }
            )
        cursor.close()
        response: dict[str, Any] = {
            "Name": Bucket,
            "Prefix": Prefix,
            "KeyCount": len(contents),
            "MaxKeys": MaxKeys,
            "IsTruncated": truncated,
        }
        if contents:
            response["Contents"] = contents
        if truncated:
            response["NextContinuationToken"] = contents[-1]["Key"]
        return response
