"""The outside world: Fynd over HTTP, the DynamoDB ledger, the SQS queue, Secrets Manager."""
