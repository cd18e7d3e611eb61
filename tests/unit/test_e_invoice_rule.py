"""An invoice that says it needs an e-invoice (`eInvoiceRequired: true`) but has no IRN is
refused with 422 naming `irnNumber` (docs/interface.md); nothing of the body is queued."""

import json

import pytest

from factories import invoice_dict
from relay.domain.errors import InvalidInvoices
from relay.domain.invoice import Invoice
from relay.domain.webhook import parse_invoices


def test_an_e_invoiced_invoice_without_its_irn_is_refused_naming_the_field_and_the_others_too() -> None:
    # Given a webhook of two invoices, the second saying it is e-invoiced without an IRN
    body = json.dumps([invoice_dict("FY-E-1"), invoice_dict("FY-E-2", eInvoiceRequired=True, ackNumber="1")])
    # When it is read, Then it is refused whole, naming the index and irnNumber with the reason
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    (error,) = refused.value.errors
    assert (error.index, error.field) == (1, "irnNumber")
    assert "eInvoiceRequired" in error.message


@pytest.mark.parametrize("flag", [True, False, None])
def test_an_invoice_with_its_irn_or_not_e_invoiced_is_accepted_and_the_flag_never_reaches_fynd(
    flag: bool | None,
) -> None:
    document = invoice_dict("FY-E-3", eInvoiceRequired=flag, irnNumber="a" * 64 if flag else None)
    (parsed,) = parse_invoices(json.dumps(document))
    assert "eInvoiceRequired" not in parsed.to_fynd()
    assert parsed.to_fynd()["orderId"] == "FY-E-3"


def test_the_flag_is_a_strict_boolean() -> None:
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(json.dumps(invoice_dict("FY-E-4", eInvoiceRequired="yes", irnNumber="x")))
    assert refused.value.errors[0].field == "eInvoiceRequired"


def test_only_adds_to_is_true_for_added_fields_only() -> None:
    first = Invoice.model_validate(invoice_dict("FY-E-5"))
    assert Invoice.model_validate(invoice_dict("FY-E-5", irnNumber="x")).only_adds_to(first)
    assert not first.only_adds_to(first)
    assert not Invoice.model_validate(invoice_dict("FY-E-5", invoiceNumber="other")).only_adds_to(first)
