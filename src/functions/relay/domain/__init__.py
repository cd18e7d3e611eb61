"""Pure rules of the relay: invoices, ledger states, batching and Fynd's code policy. No I/O here."""
