"""Personal data in text: found with Presidio's pattern recognizers, redacted as ``<ENTITY_TYPE>`` or
replaced by reversible tokens.

Only recognizers that need no language model run (Presidio's default engine wants a spaCy model that
this runtime does not ship), each called directly without NLP artifacts. Presidio's context boost needs
those artifacts, so this module applies a simpler rule of its own: a match that is nothing but digits
(``4155550132``, an NHS number without spaces) counts only when one of the recognizer's context words
("phone", "nhs") comes shortly before it, because bare digit runs are far more often timestamps and
ids. Person names are not detected: no offline recognizer for them exists here.

Default entities (``DEFAULT_ENTITIES``) keep false positives low on ordinary text: every national id in
the list has a check digit or a rigid format. ``EXTRA_ENTITIES`` can be asked for with the ``entities``
option; their checksums are weak (one random number in ten passes), so they need their context words.

Presidio (and spaCy, which it imports) load at first use, about a second: an agent whose chain never
scans pays nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agex.core.errors import ConfigurationError
from agex.core.guard import (
    ACTIONS_BY_CHANNEL,
    Action,
    Channel,
    Content,
    GuardSpec,
    Verdict,
    allow,
    map_strings,
)

NAME = "pii"

# entity -> (class in presidio_analyzer.predefined_recognizers, lowest score kept). A recognizer with a
# checksum scores 1.0 when the checksum holds, so 1.0 keeps only valid numbers.
_RECOGNIZERS: dict[str, tuple[str, float]] = {
    "EMAIL_ADDRESS": ("EmailRecognizer", 1.0),
    "PHONE_NUMBER": ("PhoneRecognizer", 0.4),
    "CREDIT_CARD": ("CreditCardRecognizer", 1.0),
    "IBAN_CODE": ("IbanRecognizer", 1.0),
    "IP_ADDRESS": ("IpRecognizer", 0.6),
    "US_SSN": ("UsSsnRecognizer", 0.5),
    "CA_SIN": ("CaSinRecognizer", 0.5),
    "UK_NHS": ("NhsRecognizer", 1.0),
    "UK_NINO": ("UkNinoRecognizer", 0.5),
    "ES_NIF": ("EsNifRecognizer", 1.0),
    "ES_NIE": ("EsNieRecognizer", 1.0),
    "IT_FISCAL_CODE": ("ItFiscalCodeRecognizer", 1.0),
    "FI_PERSONAL_IDENTITY_CODE": ("FiPersonalIdentityCodeRecognizer", 1.0),
    # opt-in
    "PL_PESEL": ("PlPeselRecognizer", 1.0),
    "SE_PERSONNUMMER": ("SePersonnummerRecognizer", 1.0),
    "IN_AADHAAR": ("InAadhaarRecognizer", 1.0),
    "IN_PAN": ("InPanRecognizer", 0.5),
    "SG_NRIC_FIN": ("SgFinRecognizer", 0.5),
    "AU_TFN": ("AuTfnRecognizer", 1.0),
    "AU_MEDICARE": ("AuMedicareRecognizer", 1.0),
    "DE_TAX_ID": ("DeTaxIdRecognizer", 1.0),
    "TR_NATIONAL_ID": ("TrNationalIdRecognizer", 1.0),
    "KR_RRN": ("KrRrnRecognizer", 1.0),
    "ZA_ID_NUMBER": ("ZaIdNumberRecognizer", 1.0),
    "US_ITIN": ("UsItinRecognizer", 0.5),
}
DEFAULT_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "CA_SIN", "UK_NHS",
    "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "FI_PERSONAL_IDENTITY_CODE")
EXTRA_ENTITIES: tuple[str, ...] = tuple(e for e in _RECOGNIZERS if e not in DEFAULT_ENTITIES)
SUPPORTED_ENTITIES: tuple[str, ...] = tuple(_RECOGNIZERS)

_CONTEXT_WINDOW = 48
"""How far before a bare digit run its context word may be, in characters."""
_BARE_DIGITS = re.compile(r"\d+")
_NOT_ADDRESSES = ("127.", "0.0.0.0", "::1", "::")
"""Loopback and unspecified addresses name no one (they fill every log of local development)."""
_VERSION_BEFORE = re.compile(r"(?:[=<>~^]\s*|\b(?:version|release|section|v)[\s-]*)$", re.IGNORECASE)
"""What comes before a four-part version ("brotli>=1.2.0.0", "section 2.3.2.4"), which reads as an IPv4."""
_PHONE_CHARS = re.compile(r"[\d\s().+\-/]+")
_PHONE_RUN = re.compile(r"[+(]*\d[\d\s().+\-/]*\d")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UPPER_CASE_IDS = frozenset({"ES_NIF", "ES_NIE", "UK_NINO", "IT_FISCAL_CODE", "FI_PERSONAL_IDENTITY_CODE", "IN_PAN",
                             "SG_NRIC_FIN"})


@dataclass(frozen=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float


class PiiRedactor:
    """Finds personal data in a string. Built cheaply; Presidio loads at the first ``find``."""

    def __init__(self, entities: Iterable[str] = DEFAULT_ENTITIES) -> None:
        self.entities = tuple(dict.fromkeys(entities))
        unknown = [e for e in self.entities if e not in _RECOGNIZERS]
        if unknown:
            raise ValueError(f"unsupported entities {unknown}")

    @functools.cached_property
    def _recognizers(self) -> list[tuple[str, Any, float, tuple[str, ...]]]:
        return [(e, r, _RECOGNIZERS[e][1], tuple(c.lower() for c in r.context or ()))
                for e, r in ((e, _build(e)) for e in self.entities)]

    def find(self, text: str) -> list[Finding]:
        """The personal data in ``text``, overlaps merged (the span of overlapping matches is their union,
        named after the best scored, then longest, of them), in order."""
        if not text:
            return []
        found: list[Finding] = []
        for entity, recognizer, min_score, context in self._recognizers:
            for r in recognizer.analyze(text, [entity], None):
                if r.score >= min_score and _plausible(entity, text, r.start, r.end, context):
                    found.append(Finding(entity, r.start, r.end, float(r.score)))
        return _merge(found)

    def redact(self, text: str) -> tuple[str, tuple[str, ...]]:
        """``text`` with each finding replaced by ``<ENTITY_TYPE>``, and the kinds found (sorted)."""
        findings = self.find(text)
        kinds = tuple(sorted({f.entity_type for f in findings}))
        return _replace(text, findings, lambda f: f"<{f.entity_type}>"), kinds

    def tokenize(self, text: str, key: str) -> tuple[str, dict[str, str]]:
        """``text`` with each finding replaced by a token stable for the same ``key`` (the run's), and the
        token -> value mapping."""
        mapping: dict[str, str] = {}

        def token(f: Finding) -> str:
            value = text[f.start:f.end]
            digest = hmac.new(key.encode(), f"{f.entity_type}\0{value}".encode(), hashlib.sha256).hexdigest()
            for size in (8, 16, 64):  # a longer suffix on the (unlikely) collision of two values
                name = f"<{f.entity_type}_{digest[:size]}>"
                if mapping.setdefault(name, value) == value:
                    return name
            raise AssertionError("HMAC-SHA256 collision")

        return _replace(text, self.find(text), token), mapping


@functools.cache
def redactor() -> PiiRedactor:
    """The redactor of the default entities, shared by the process."""
    return PiiRedactor()


def tokenize(text: str, key: str) -> tuple[str, dict[str, str]]:
    """``text`` with its personal data replaced by tokens such as ``<EMAIL_ADDRESS_1f0c93ab>``: the suffix
    is HMAC-SHA256(key, entity type and value), so the same value gets the same token in every step of
    a run. Returns the text and token -> value."""
    return redactor().tokenize(text, key)


_TOKEN = re.compile(r"<[A-Z][A-Z_]*_[0-9a-f]{8,64}>")


def detokenize(value: Any, mapping: dict[str, str]) -> Any:
    """``value`` (a string or JSON-like) with every token of ``mapping`` put back to its real value;
    tokens not in ``mapping`` are left as they are."""
    if not mapping:
        return value
    return map_strings(value, lambda s: _TOKEN.sub(lambda m: mapping.get(m.group(0), m.group(0)), s))


def _build(entity: str) -> Any:
    from presidio_analyzer import predefined_recognizers

    if entity == "EMAIL_ADDRESS":
        return _offline_email_recognizer()
    if entity == "PHONE_NUMBER":
        return _phone_recognizer()
    return getattr(predefined_recognizers, _RECOGNIZERS[entity][0])()


def _offline_email_recognizer() -> Any:
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # Presidio checks the domain against the public suffix list with tldextract's default extractor,
    # which downloads the list on first use; the snapshot shipped in the package is enough and keeps the
    # guard free of network I/O.
    extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _phone_recognizer() -> Any:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class RunPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
        """Presidio's, run on the runs of text that could hold a number of 9 digits or more only:
        phonenumbers parses every digit group once per region, which makes numbers-heavy text (tables,
        JSON of orders) ten times slower to scan than prose."""

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results = []
            for run in _PHONE_RUN.finditer(text):
                if sum(c.isdigit() for c in run.group(0)) < 9:
                    continue
                lo, hi = max(0, run.start() - 1), min(len(text), run.end() + 1)
                for r in super().analyze(text[lo:hi], entities, nlp_artifacts):
                    r.start, r.end = r.start + lo, r.end + lo
                    results.append(r)
            return results

    # Presidio's regions less CA, whose numbers are the US plan's
    return RunPhoneRecognizer(supported_regions=("US", "GB", "DE", "FR", "IL", "IN", "BR"))


def _plausible(entity: str, text: str, start: int, end: int, context: tuple[str, ...]) -> bool:
    value = text[start:end]
    before, after = text[start - 1:start], text[end:end + 1]
    if before.isalnum() or after.isalnum():  # a piece of a longer token: an id, a hash
        return False
    if entity == "IP_ADDRESS":
        return not value.startswith(_NOT_ADDRESSES) and not _VERSION_BEFORE.search(text[max(0, start - 12):start])
    if entity == "PHONE_NUMBER" and not _phone_shaped(value, before, after):
        return False
    if entity in _UPPER_CASE_IDS and value != value.upper():
        return False  # written in capitals; "9482782c" is a piece of a hex id, not a DNI
    if _BARE_DIGITS.fullmatch(value) and entity != "CREDIT_CARD":
        window = text[max(0, start - _CONTEXT_WINDOW):start].lower()
        return any(re.search(rf"\b{re.escape(c)}\b", window) for c in context)
    return True


def _phone_shaped(value: str, before: str, after: str) -> bool:
    """What phonenumbers accepts, less what ordinary text is full of: versions ("0.9.1 -- 2019-01-29"),
    dates, progress counts ("15327/15327"), the seconds of a timestamp ("10:31:07.123456")."""
    if (before and before in ":.,") or after == ":" or not _PHONE_CHARS.fullmatch(value):
        return False
    if sum(c.isdigit() for c in value) < 9 or ".." in value or _ISO_DATE.search(value):
        return False
    return "/" not in value or value.lstrip("+(").startswith("0")  # "030/901820": a German area code


def _merge(found: list[Finding]) -> list[Finding]:
    found.sort(key=lambda f: (f.start, -f.end))
    out: list[Finding] = []
    group: list[Finding] = []
    for f in [*found, None]:
        if f is not None and group and f.start < max(g.end for g in group):
            group.append(f)
            continue
        if group:
            best = max(group, key=lambda g: (g.score, g.end - g.start))
            out.append(Finding(best.entity_type, group[0].start, max(g.end for g in group), best.score))
        group = [f] if f is not None else []
    return out


def _replace(text: str, findings: list[Finding], by: Callable[[Finding], str]) -> str:
    parts, at = [], 0
    for f in findings:
        parts += [text[at:f.start], by(f)]
        at = f.end
    return "".join(parts) + text[at:]


class PiiGuard:
    """Personal data in a channel's content: replaced by ``<ENTITY_TYPE>`` (``redact``), or the content
    quarantined or blocked. Watches the model's output unless told otherwise."""

    name = NAME

    def __init__(self, channels: frozenset[Channel] = frozenset({Channel.model_output}),
                 action: Action = Action.redact, entities: Iterable[str] = DEFAULT_ENTITIES,
                 tokenize: bool = False) -> None:
        self.channels, self.action, self.tokenize = channels, action, tokenize
        self.entities = tuple(entities)
        self.redactor = redactor() if self.entities == DEFAULT_ENTITIES else PiiRedactor(self.entities)

    def check(self, content: Content) -> Verdict:
        kinds: set[str] = set()

        def redact(s: str) -> str:
            text, found = self.redactor.redact(s)
            kinds.update(found)
            return text

        redacted = map_strings(content.value, redact)
        if not kinds:
            return allow(NAME)
        findings = tuple(sorted(kinds))
        return Verdict(self.action, NAME, reason=f"personal data: {', '.join(findings)}", findings=findings,
                       redacted=redacted if self.action == Action.redact else None)


def from_spec(spec: GuardSpec) -> PiiGuard:
    where = f"guard {spec.use}"
    channels = frozenset(spec.channels) if spec.channels is not None else frozenset({Channel.model_output})
    if not channels:
        raise ConfigurationError(f"{where}: channels must not be empty")
    action = spec.action or Action.redact
    refused = sorted(c.value for c in channels if action not in ACTIONS_BY_CHANNEL[c])
    if refused:
        raise ConfigurationError(f"{where}: action {action.value} is not possible on {', '.join(refused)}")
    if spec.threshold is not None:
        raise ConfigurationError(f"{where}: it takes no threshold (each entity has its own validation)")
    unknown = set(spec.options) - {"entities", "tokenize_model_requests"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown option(s) {sorted(unknown)}; it has: entities, "
                                 "tokenize_model_requests")
    entities = spec.options.get("entities", DEFAULT_ENTITIES)
    if (isinstance(entities, str) or not isinstance(entities, list | tuple) or not entities
            or not all(isinstance(e, str) for e in entities)):
        raise ConfigurationError(f"{where}: option entities must be a non-empty list of entity names")
    unsupported = [e for e in entities if e not in _RECOGNIZERS]
    if unsupported:
        raise ConfigurationError(f"{where}: unsupported entities {unsupported}; supported: "
                                 f"{', '.join(SUPPORTED_ENTITIES)}")
    tokenize = spec.options.get("tokenize_model_requests", False)
    if not isinstance(tokenize, bool):
        raise ConfigurationError(f"{where}: option tokenize_model_requests must be true or false")
    return PiiGuard(channels, action, tuple(entities), tokenize)
