"""The embedded engine: every port on one SQLite file under the engine's home.

The local default. Laid out by aggregate, mirroring `stratoflow.aws`: `runs` (RunStore),
`definitions` (DefinitionStore), `queues` (the task and completion queues, with SQS's
contract), `objects` (uploaded workflow files), all on `db`; `engine` puts them together.
"""
