"""Pure rules of the relay: invoices, intake, ledger states, Fynd calls, the code policy, dispatch
and reconciling, and every error they name. No I/O here."""
