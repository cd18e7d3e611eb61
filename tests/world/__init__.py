"""The test world where time passes and quotas bite (issue 19): a module per port or actor.

- `clock`: one clock the fakes advance by each call's latency, seeded latencies, an event heap,
  and Lambda's timeout (`Invocation`, `Killed`);
- `fynd`: Fynd's rate limit per credential, 429 + Retry-After, latency tail, IN403, lost answers;
- `dynamodb`: the ledger fake (tests/fakes.py) charged in write/read units per partition of the
  table and of the ByStatus index, with GSI back-pressure and a new table's warm throughput;
- `sqs`: the queue with SQS's quotas (in flight, delay, visibility, retention, size, characters);
- `senders`: ERPNext v14/v15, ERPNext after April 2026, a batching Standard Webhooks ERP;
- `template`: every setting the model uses, read from template.yaml.

The real ingest (relay.domain.intake), dispatcher and reconciler run through the ports;
`tests/scale/` drives them (`make scale`) and `docs/scale.md` says what is real and what is modelled.
"""
