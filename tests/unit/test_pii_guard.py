"""The PII guard with Presidio's real pattern recognizers: what it finds, what it leaves alone, its tokens."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agex.core.errors import ConfigurationError
from agex.core.guard import Action, Channel, Content, GuardContext, GuardSpec
from agex.guards import pii
from agex.guards.chain import build_chain

R = pii.redactor()
CTX = GuardContext(agent="support")


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start:f.end]) for f in R.find(text)]


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("write to john.smith@example.com today", "EMAIL_ADDRESS", "john.smith@example.com"),
    ("call +1 415-555-0132 now", "PHONE_NUMBER", "+1 415-555-0132"),
    ("call (415) 555-0132 now", "PHONE_NUMBER", "(415) 555-0132"),
    ("London office: 020 7946 0958.", "PHONE_NUMBER", "020 7946 0958"),
    ("Berlin: +49 30 901820", "PHONE_NUMBER", "+49 30 901820"),
    ("my phone is 4155550132", "PHONE_NUMBER", "4155550132"),
    ("card 4111 1111 1111 1111 expires", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card 4111111111111111 expires", "CREDIT_CARD", "4111111111111111"),
    ("pay to DE89 3704 0044 0532 0130 00 please", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
    ("pay to GB82WEST12345698765432 please", "IBAN_CODE", "GB82WEST12345698765432"),
    ("login from 203.0.113.42 failed", "IP_ADDRESS", "203.0.113.42"),
    ("login from 2001:db8::8a2e:370:7334 failed", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("SSN 536-22-8174 on file", "US_SSN", "536-22-8174"),
    ("SIN 130 692 544 on file", "CA_SIN", "130 692 544"),
    ("NHS number 943 476 5919.", "UK_NHS", "943 476 5919"),
    ("nhs no. 9434765919.", "UK_NHS", "9434765919"),
    ("NI number AB 12 34 56 C.", "UK_NINO", "AB 12 34 56 C"),
    ("DNI 12345678Z.", "ES_NIF", "12345678Z"),
    ("NIE X1234567L.", "ES_NIE", "X1234567L"),
    ("codice fiscale RSSMRA85T10A562S.", "IT_FISCAL_CODE", "RSSMRA85T10A562S"),
    ("hetu 131052-308T.", "FI_PERSONAL_IDENTITY_CODE", "131052-308T"),
])
def test_each_default_entity_is_found(text: str, entity: str, value: str) -> None:
    assert kinds(text) == [(entity, value)]


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 expires",  # fails Luhn
    "pay to DE89 3704 0044 0532 0130 01 please",  # fails the IBAN checksum
    "DNI 12345678A.",  # wrong check letter
    "SSN 123-45-6789 (the sample SSN)",
    "localhost 127.0.0.1 and :: and 0.0.0.0",
])
def test_numbers_that_fail_their_checks_are_not_personal_data(text: str) -> None:
    assert kinds(text) == []


@pytest.mark.parametrize("text", [
    "Order A-1042 was shipped on 2024-05-12 for $89.00.",
    "Run run-1a2b3c started at 2024-05-12T10:30:00Z, finished 2024-05-12T10:31:07.123456+00:00.",
    "Request 550e8400-e29b-41d4-a716-446655440000 failed; retry 3 of 5.",
    "id 9482782c-1b7e-4d15-9a3c-0e2f4b6d8a10 and sha 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "Invoice INV-2024-00017: 1,234.56 EUR, due 15/06/2024 (06/15/2024).",
    "Epoch 1715500000, 1715500000123 ms; port 8080; pid 424242; at 12:30:45 on 10.5.2024.",
    "Upgrade to brotli>=1.2.0.0 and see section 2.3.2.4; version 3.11.7, build 20240512.1.",
    "## [0.21.1] - 2023-01-21 and 0.9.1 -- 2019-01-29; 15327/15327 done",
    "Reference 4155550132 and 9434765919 noted.",  # bare digits without a context word
    "Tracking 1Z999AA10123456784, 2.5 kg, qty 1,000,000, price $1,299.99 to $999.00 (-23%).",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert kinds(text) == []
    assert R.redact(text) == (text, ())


def test_nhs_numbers_need_their_check_digit() -> None:
    nhs = pii.PiiRedactor(["UK_NHS"])
    assert [f.entity_type for f in nhs.find("NHS number 943 476 5919")] == ["UK_NHS"]
    assert nhs.find("NHS number 943 476 5918") == []  # fails mod 11 (all of default reads it as a phone)


def test_redact_replaces_findings_and_lists_kinds_sorted() -> None:
    text = "Mail john@example.com or call +44 20 7946 0958; card 4111-1111-1111-1111."
    out, found = R.redact(text)
    assert out == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>; card <CREDIT_CARD>."
    assert found == ("CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER")
    assert R.redact(out) == (out, ())


def test_overlapping_findings_merge_into_one() -> None:
    # a valid NHS number also reads as a US phone number: one finding, the checksummed one
    assert kinds("call 943 476 5919") == [("UK_NHS", "943 476 5919")]


def test_extra_entities_are_opt_in_and_need_their_context_word() -> None:
    text = "PESEL 44051401359; a reference far enough from that word: 44051401359"
    assert kinds(text) == []
    extra = pii.PiiRedactor(["PL_PESEL"])
    assert [(f.entity_type, f.start) for f in extra.find(text)] == [("PL_PESEL", 6)]


def test_tokens_are_stable_per_key_and_round_trip() -> None:
    text = "Mail john@example.com, then john@example.com again, or call +1 415-555-0132."
    tokenized, mapping = pii.tokenize(text, "run-key")
    assert "john@example.com" not in tokenized and "415-555-0132" not in tokenized
    assert set(mapping.values()) == {"john@example.com", "+1 415-555-0132"}
    email = next(t for t, v in mapping.items() if v == "john@example.com")
    assert email.startswith("<EMAIL_ADDRESS_") and tokenized.count(email) == 2
    assert pii.tokenize("reply to john@example.com", "run-key")[1] == {email: "john@example.com"}
    assert email not in pii.tokenize("reply to john@example.com", "other-run")[1]
    assert pii.detokenize(tokenized, mapping) == text
    # a tool call the model makes with the token gets the real value, wherever the token sits
    args = {"to": [email], "body": f"Hi {email}", "n": 3, "unknown": "<EMAIL_ADDRESS_00000000>"}
    assert pii.detokenize(args, mapping) == {"to": ["john@example.com"], "body": "Hi john@example.com", "n": 3,
                                             "unknown": "<EMAIL_ADDRESS_00000000>"}
    assert R.redact(tokenized)[1] == ()


def test_guard_redacts_strings_of_any_shape() -> None:
    guard = pii.from_spec(GuardSpec(use="pii"))
    assert guard.channels == {Channel.model_output} and guard.action == Action.redact and not guard.tokenize
    value = {"reply": "Write to ann@example.org", "items": ["card 4111 1111 1111 1111", 7]}
    verdict = guard.check(Content(Channel.model_output, value, "", CTX))
    assert verdict.action == Action.redact and verdict.guard == "pii"
    assert verdict.findings == ("CREDIT_CARD", "EMAIL_ADDRESS")
    assert verdict.reason == "personal data: CREDIT_CARD, EMAIL_ADDRESS"
    assert verdict.redacted == {"reply": "Write to <EMAIL_ADDRESS>", "items": ["card <CREDIT_CARD>", 7]}
    clean = "Order A-1042 ships on 2024-05-12."
    assert guard.check(Content(Channel.model_output, clean, clean, CTX)).action == Action.allow


def test_guard_with_entities_and_a_stricter_action() -> None:
    guard = pii.from_spec(GuardSpec(use="pii", channels=(Channel.tool_output, Channel.tool_args),
                                    action=Action.block, options={"entities": ["EMAIL_ADDRESS"],
                                                                  "tokenize_model_requests": True}))
    assert guard.tokenize and guard.action == Action.block
    text = "call +1 415-555-0132 or mail ann@example.org"
    verdict = guard.check(Content(Channel.tool_output, text, text, CTX))
    assert (verdict.action, verdict.findings, verdict.redacted) == (Action.block, ("EMAIL_ADDRESS",), None)


@pytest.mark.parametrize(("spec", "message"), [
    (GuardSpec(use="pii", action=Action.approve), "approve is not possible on model_output"),
    (GuardSpec(use="pii", channels=(Channel.tool_args,), action=Action.quarantine), "quarantine is not possible"),
    (GuardSpec(use="pii", channels=()), "channels must not be empty"),
    (GuardSpec(use="pii", options={"entity": ["EMAIL_ADDRESS"]}), "unknown option(s) ['entity']"),
    (GuardSpec(use="pii", options={"entities": ["PERSON"]}), "unsupported entities ['PERSON']"),
    (GuardSpec(use="pii", options={"entities": "EMAIL_ADDRESS"}), "non-empty list"),
    (GuardSpec(use="pii", options={"tokenize_model_requests": "yes"}), "true or false"),
    (GuardSpec(use="pii", threshold=0.5), "no threshold"),
])
def test_from_spec_refuses_what_cannot_work(spec: GuardSpec, message: str) -> None:
    with pytest.raises(ConfigurationError, match="guard pii") as e:
        pii.from_spec(spec)
    assert message in str(e.value)


def test_importing_the_guard_loads_no_presidio() -> None:
    probe = ("import sys, agex.guards.pii as p; p.from_spec(p.GuardSpec(use='pii')); "
             "print(sorted(m for m in ('presidio_analyzer', 'spacy', 'phonenumbers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_records_of_a_structured_output_are_scanned_at_once_and_each_datum_redacted_where_it_is() -> None:
    chain = build_chain((GuardSpec(use="pii"),))
    value = {"rows": [{"phone": "+1 415 555 0132", "on": "2026-11-12"}, {"note": "write to dana@example.com"},
                      {"id": "A-1042", "iban": "GB82 WEST 1234 5698 7654 32"}], "n": 3}
    shown = chain.redact_for_records(value)
    assert shown == {"rows": [{"phone": "<PHONE_NUMBER>", "on": "2026-11-12"}, {"note": "write to <EMAIL_ADDRESS>"},
                              {"id": "A-1042", "iban": "<IBAN_CODE>"}], "n": 3}
    clean = {"rows": [{"id": "A-1042", "on": "2026-11-12", "amount": "89.00"}]}
    assert chain.redact_for_records(clean) is clean
