"""Answer extraction and comparison shared by the competition-maths tasks (math500, olympiadbench).

One module, so that both tasks score by the same rules (docs/paper.md section 5):
- `last_boxed`: the content of the last \\boxed{...} (or \\fbox{...}), braces matched;
- `answer_after_hashes`: the text after the last "####" on its line (the prompts ask for it);
- `normalize`: a light LaTeX normalisation: spacing, $, \\left and \\right, \\text{}, a trailing
  unit (\\text{ cm}), degrees and % signs, a leading "x=", \\dfrac and short forms like \\frac12 are
  canonicalised; answers that are plain numbers (5, -2.5, 3/4, \\frac{3}{4}) become the exact
  fraction's string ("0.5" and "\\frac12" are both "1/2", which merges their votes);
- `equivalent`: two normalised answers agree numerically within 1e-6 when both are plain numbers,
  else as strings.
Deviation: this is simpler than a symbolic checker (no sympy), so equivalent forms such as
"\\frac{\\sqrt3}{2}" vs "\\frac{1}{2}\\sqrt3" are not recognised as equal.
"""
from __future__ import annotations

import re
from fractions import Fraction

_REMOVE = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "\\$", "$",
           "^{\\circ}", "^\\circ", "\\%", "%")


def last_boxed(text: str) -> str:
    """Content of the last \\boxed{...} or \\fbox{...} (braces matched); "" if none is closed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return ""
    brace = text.find("{", start)
    if brace < 0 or text[start:brace].strip() not in ("\\boxed", "\\fbox"):
        return ""
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1:i].strip()
    return ""  # unbalanced: the response was cut off inside the box


def as_number(text: str) -> Fraction | None:
    """Exact value of an integer, decimal, a/b or \\frac{a}{b} (optionally negative); else None."""
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text) or re.fullmatch(r"()(-?\d+)/(\d+)", text)
    try:
        if match:
            sign, num, den = match.groups()
            value = Fraction(int(num), int(den))
            return -value if sign else value
        if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):  # a zero denominator, or more digits than int() takes
        return None
    return None


def _strip_text_commands(text: str) -> str:
    """\\text{abc} -> abc (also \\textbf, \\mbox, \\mathrm), innermost first."""
    pattern = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
    while pattern.search(text):
        text = pattern.sub(r"\1", text)
    return text


def _strip_unit(text: str) -> str:
    """Drop a trailing unit written as \\text{ cm} or \\mbox{ inches}^2 ("5.4 \\text{ cents}" -> "5.4")."""
    stripped = re.sub(r"\\(?:text|mbox)\{\s[^{}]*\}(?:\^\{?\d\}?)?\s*$", "", text)
    return stripped if stripped.strip() else text  # "\\text{ Evelyn}" alone is the answer, not a unit


def normalize(answer: str) -> str:
    """Canonical form of an answer, used as the vote key and for comparison."""
    text = _strip_text_commands(_strip_unit(answer))
    for token in _REMOVE:
        text = text.replace(token, "")
    text = re.sub(r"\s+", "", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.rstrip(".")
    text = re.sub(r"^[a-zA-Z]=", "", text)  # "x=5" -> "5"; a lone variable assignment only
    # short forms: \frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \frac{x}2 -> \frac{x}{2}, \sqrt2 -> \sqrt{2}
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)
    text = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", text)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")  # 1,000 is a thousand; "1,-2" stays a list
    value = as_number(text)
    return text if value is None else str(value)


def equivalent(a: str, b: str) -> bool:
    """Whether two normalised answers agree: numerically within 1e-6, else as strings."""
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return abs(x - y) <= Fraction(1, 10**6)
    return a == b


def answer_after_hashes(text: str) -> str:
    """The answer written after the last "####": the rest of that line, or of the next non-empty one."""
    at = text.rfind("####")
    if at < 0:
        return ""
    lines = [line.strip() for line in text[at + 4:].splitlines() if line.strip()]
    return lines[0] if lines else ""
