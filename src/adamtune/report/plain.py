"""adamtune's output on a terminal whose encoding is not UTF-8 (``PYTHONIOENCODING=ascii``, a
Latin-1 locale): each symbol it cannot show is spelt in ASCII (→ as ->, ≈ as ~, β as beta; · as
*, the product it is in formulas), where it would otherwise stop the command with a
UnicodeEncodeError.

Rich draws its own bars and table borders in ASCII on such a terminal already; this covers the
text adamtune writes itself (headers, notes, findings, formulas) and the names users give.
"""

from __future__ import annotations

import codecs
import sys
import unicodedata

HANDLER = "adamtune-plain"
"""The name of the codec error handler that spells characters in ASCII."""

_SPELT = {
    "·": "*", "•": "*", "●": "*", "★": "*", "—": "-", "–": "-", "−": "-", "→": "->", "←": "<-", "≈": "~",
    "≥": ">=", "≤": "<=", "×": "x", "✕": "x", "✓": "v", "…": "...", "∞": "inf", "√": "sqrt", "‖": "||",
    "━": "-", "─": "-", "│": "|", "½": "1/2", "±": "+/-",
}
"""What adamtune's own symbols become; any other character is spelt by :func:`spell`."""


def spell(char: str) -> str:
    """``char`` in ASCII: adamtune's symbols as ``_SPELT`` says, a Greek letter by its name
    (θ: theta), a sub- or superscript or a full-width form as its plain character (²: 2, ᵢ: i,
    ３: 3), and anything else, a name's letters with marks included (é, 名), as Python escapes
    it (``\xe9``, ``\u540d``): spelt ``e``, the study ``nlé`` was named ``nle`` in an error
    saying no study of that name exists, which another study may be called."""
    if char in _SPELT:
        return _SPELT[char]
    name = unicodedata.name(char, "")
    if name.startswith(("GREEK SMALL LETTER ", "GREEK CAPITAL LETTER ")) and " WITH " not in name:
        word = name.rsplit(" ", 1)[1].lower().replace("lamda", "lambda")
        return word if "SMALL" in name else word.capitalize()
    if unicodedata.combining(char):
        return ""  # a mark over the letter before it (x̂: x)
    if unicodedata.normalize("NFD", char) == char:  # no letter with marks: a compatibility form
        plain = unicodedata.normalize("NFKD", char)
        if plain.isascii() and plain.isprintable():
            return plain
    return char.encode("ascii", "backslashreplace").decode()


def _spell_errors(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeEncodeError):
        raise e
    return "".join(spell(c) for c in e.object[e.start:e.end]), e.end


codecs.register_error(HANDLER, _spell_errors)


def fit_output_encoding() -> None:
    """Make standard output and error spell in ASCII what their encoding cannot show, unless
    they are UTF-8 or were given an error handler of their own (``PYTHONIOENCODING=ascii:replace``).
    The characters the encoding has (é in Latin-1) are written as they are."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("_", "-")
        # Python's own handler for standard error, backslashreplace, would print · as \xb7
        if encoding.startswith("utf") or getattr(stream, "errors", "strict") not in ("strict", "backslashreplace"):
            continue
        try:
            stream.reconfigure(errors=HANDLER)
        except (AttributeError, ValueError, OSError):  # not a text stream of io's, or closed
            pass
