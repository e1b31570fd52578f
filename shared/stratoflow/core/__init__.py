"""Pure domain: the workflow model, graph checks, cron maths. No I/O, no clock, no boto3."""
