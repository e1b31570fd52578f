"""DynamoDB adapters: run state (`DynamoRunStore`) and workflow definitions.

One table, items grouped by partition: the layout is documented in `keys`. Modules, by
aggregate: `runs` and `attempts` (the run store), `definitions` (the definition store),
`codec` (values and items to records), `transactions` (conditional writes and retries).

ConditionalCheckFailed and TransactionCanceled are translated into the ports' outcomes here;
no boto3 exception crosses this package's boundary.
"""

from stratoflow.aws.dynamodb.definitions import INLINE_DEFINITION_LIMIT, DynamoDefinitionStore
from stratoflow.aws.dynamodb.runs import DynamoRunStore
from stratoflow.aws.dynamodb.transactions import TRANSACTION_LIMIT

__all__ = [
    "INLINE_DEFINITION_LIMIT",
    "TRANSACTION_LIMIT",
    "DynamoDefinitionStore",
    "DynamoRunStore",
]
