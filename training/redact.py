"""Removing personal data from transcripts before anything is written or trained on.

Each kind of data becomes a typed placeholder (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`,
`<IP>`, `<ADDRESS>`, `<NAME>`) and is counted. Checksums keep false alarms down: card
numbers must pass Luhn, IBANs their mod-97 check (python-stdnum), IP addresses must parse
(ipaddress); phone numbers must be valid for their region (phonenumbers, Google's
libphonenumber) and look like a phone number (a +, separators, or a word like "call"
nearby), so an order number is left alone. Names are those the export knows (Slack
profiles, Telegram senders) plus names introduced in the text ("my name is ...", "Hi Anna,",
sign-offs, titles), removed wherever they recur in the conversation. Street addresses are
matched by shape (number + capitalised street + street type, and "...straße 5" forms).
No detector is perfect: the report is there to be read.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import phonenumbers
from stdnum import iban, luhn

from training.transcripts import Conversation

KINDS = ("EMAIL", "IBAN", "CARD", "IP", "PHONE", "ADDRESS", "NAME")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){2,8}\b")
_CARD = re.compile(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_STREET_TYPES = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|"
    "Terrace|Parkway|Pkwy|Square|Sq|Highway|Hwy|Close|Crescent|Row|Gardens"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z'-]+\.?\s+){{1,4}}(?:{_STREET_TYPES})\b\.?"
    r"(?:,?\s*(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*#?\s*\w+)?"
    r"|\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee)\s+\d{1,4}[a-z]?\b"
)
_PHONE_CONTEXT = re.compile(
    r"(?:phone|call|tel|mobile|cell|whatsapp|number|text me|sms)\W{0,3}(?:\w+\W{1,3}){0,2}$",
    re.IGNORECASE,
)
_NAME = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_FULL_NAME = rf"{_NAME}(?:\s+{_NAME})?"
_NAME_CUES = [
    re.compile(rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Cc]all me)\s+({_FULL_NAME})"),
    re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+({_FULL_NAME})"),
    re.compile(rf"^\s*(?:Hi|Hello|Hey|Dear)\s+({_NAME})\s*[,!]", re.MULTILINE),
    re.compile(
        rf"(?:Thanks|Thank you|Regards|Best|Cheers|Sincerely|Best regards|Kind regards)"
        rf"[,!.]?\s*\n?\s*-*\s*({_FULL_NAME})\s*\.?\s*$"
    ),
]
# Capitalised words the name cues must not take for names.
_NOT_NAMES = {
    "Support", "Team", "There", "All", "Everyone", "Sir", "Madam", "Customer", "Again",
    "So", "Much", "You", "For", "The", "Thanks", "Bot", "Deskmate", "Help",
}  # fmt: skip


@dataclass
class RedactionReport:
    """How many of each kind were replaced, over everything redacted so far."""

    counts: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, int]:
        return {kind: self.counts.get(kind, 0) for kind in KINDS}

    def summary(self) -> str:
        parts = [f"{kind.lower()} {self.counts[kind]}" for kind in KINDS if self.counts[kind]]
        return f"redacted {self.total()} items: " + (", ".join(parts) if parts else "none found")


def _valid_iban(candidate: str) -> str | None:
    """The longest valid IBAN at the start of `candidate` (the regex may overrun)."""
    compact = candidate.replace(" ", "")
    for end in range(len(compact), 14, -1):
        if iban.is_valid(compact[:end]):
            return compact[:end]
    return None


class Redactor:
    """Replaces personal data with typed placeholders and counts what it replaced."""

    def __init__(self, phone_region: str = "US") -> None:
        self.phone_region = phone_region
        self.report = RedactionReport()

    def _sub(
        self,
        kind: str,
        pattern: re.Pattern[str],
        text: str,
        valid: Callable[[re.Match[str]], str | None],
    ) -> str:
        """Replace the matches `valid` accepts (it returns the text to replace, or None)."""
        out, last = [], 0
        for match in pattern.finditer(text):
            found = valid(match)
            if found is None:
                continue
            start = match.start()
            end = start + len(found)
            if start < last:
                continue
            out.append(text[last:start])
            out.append(f"<{kind}>")
            self.report.counts[kind] += 1
            last = end
        out.append(text[last:])
        return "".join(out)

    def redact(self, text: str, names: Iterable[str] = ()) -> str:
        """`text` with personal data replaced; `names` are known people's names."""
        if not text:
            return text
        text = self._sub("EMAIL", _EMAIL, text, lambda m: m[0])
        text = self._sub("IBAN", _IBAN, text, self._iban)
        text = self._sub("CARD", _CARD, text, self._card)
        text = self._sub("IP", _IPV4, text, self._ip)
        text = self._sub("IP", _IPV6, text, self._ip)
        text = self._phones(text)
        text = self._sub("ADDRESS", _ADDRESS, text, lambda m: m[0])
        return self._names(text, set(names) | self.detect_names(text))

    @staticmethod
    def _iban(match: re.Match[str]) -> str | None:
        compact = _valid_iban(match[0])
        if compact is None:
            return None
        # Map the valid compact prefix back onto the spaced original.
        taken, length = 0, 0
        for char in match[0]:
            if taken == len(compact):
                break
            length += 1
            taken += char != " "
        return match[0][:length]

    @staticmethod
    def _card(match: re.Match[str]) -> str | None:
        digits = re.sub(r"\D", "", match[0])
        return match[0] if 13 <= len(digits) <= 19 and luhn.is_valid(digits) else None

    @staticmethod
    def _ip(match: re.Match[str]) -> str | None:
        try:
            ipaddress.ip_address(match[0])
        except ValueError:
            return None
        return match[0]

    def _phones(self, text: str) -> str:
        out, last = [], 0
        matcher = phonenumbers.PhoneNumberMatcher(
            text, self.phone_region, leniency=phonenumbers.Leniency.VALID
        )
        for match in matcher:
            raw = match.raw_string
            looks_like_phone = (
                raw.lstrip().startswith("+")
                or re.search(r"\d[\s().-]+\d", raw) is not None
                or _PHONE_CONTEXT.search(text[max(0, match.start - 30) : match.start])
            )
            if not looks_like_phone or "<" in raw:
                continue
            out.append(text[last : match.start])
            out.append("<PHONE>")
            self.report.counts["PHONE"] += 1
            last = match.end
        out.append(text[last:])
        return "".join(out)

    @staticmethod
    def detect_names(text: str) -> set[str]:
        """Names introduced in the text by cues like "my name is" or "Hi Anna,"."""
        found = set()
        for cue in _NAME_CUES:
            for match in cue.finditer(text):
                words = [w for w in match[1].split() if w not in _NOT_NAMES]
                if words and len(words) == len(match[1].split()):
                    found.add(" ".join(words))
        return found

    def _names(self, text: str, names: set[str]) -> str:
        variants = set()
        for name in names:
            if not name or "bot" in name.lower():
                continue
            variants.add(name)
            variants.update(
                part for part in name.split() if len(part) >= 3 and part not in _NOT_NAMES
            )
        if not variants:
            return text
        alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w<])(?:{alternatives})(?![\w>])")
        return self._sub("NAME", pattern, text, lambda m: m[0])

    def redact_conversation(self, conversation: Conversation) -> Conversation:
        """A copy of the conversation with every message (and correction) redacted."""
        names = set(conversation.meta.get("names") or [])
        for message in conversation.messages:
            names |= self.detect_names(message.content)
            names |= self.detect_names(message.correction)
        messages = []
        for message in conversation.messages:
            copy = type(message)(**{f: getattr(message, f) for f in message.__slots__})
            copy.content = self.redact(message.content, names)
            copy.correction = self.redact(message.correction, names)
            messages.append(copy)
        meta = {k: v for k, v in conversation.meta.items() if k != "names"}
        meta["names_redacted"] = len(names)
        return Conversation(messages, meta)
