#!/usr/bin/env python3
"""Check and build the newstag news corpus.

The corpus is authored in ``data/src/batch*.md`` and ``data/src/heldout*.md``
using the markup described in ``data/src/MARKUP.md``.  This script has two modes:

  python3 scripts/build_corpus.py --check [FILE...]
      Parse markup files and report every problem as ``FILE:LINE: message``.
      Exits 1 if there is any error; otherwise prints per-file statistics.
      Without FILE arguments all ``data/src/batch*.md`` and
      ``data/src/heldout*.md`` files are checked.

  python3 scripts/build_corpus.py
      Parse all source files, convert every article to a JSONL record, deal the
      batch articles to train/dev/test (rules below) and write
      ``data/{train,dev,test,heldout}.jsonl`` and ``data/STATS.md`` (atomically).

Which file an article goes to:

  * ``batch1.md`` ... ``batch5.md`` (the frozen batches, FROZEN_BATCHES): a
    stratified 70/15/15 train/dev/test split computed over the articles of
    these five files only, exactly as before batch6 existed, so adding later
    batches never moves one of their articles and ``data/test.jsonl`` stays
    byte-identical.
  * every other ``batch*.md`` (``batch6.md`` and later): dealt to train and
    dev only, 85/15, by the same quota method, computed over each file's
    articles alone, so adding or editing one file never moves an article of
    another file.  The test split never grows.
  * ``heldout*.md``: every article goes to ``data/heldout.jsonl``, a set that
    is never trained or tuned on (no thresholds, no model selection); it has
    its own section in STATS.md and does not count towards the corpus
    targets.  A held-out file with errors is reported and left out of
    ``heldout.jsonl`` (train/dev/test are still written, as they never depend
    on held-out files); an error in a batch file still stops the whole build.

An article has MIN_WORDS to MAX_WORDS (120-1,600) words; the limit was 450
before long multi-topic articles were added in batch6.

Within every output file records keep source order (file, then position), so
the records of the frozen batches come first in train.jsonl and dev.jsonl, in
the same order as before.  Ids are unique across all batch and held-out files.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import glob
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

# --------------------------------------------------------------------------
# Vocabulary (must agree with data/src/MARKUP.md)
# --------------------------------------------------------------------------

TOPICS = ("energy", "borders", "defense", "trade")
REGIONS = (
    "central-asia", "caucasus", "europe", "middle-east", "south-asia",
    "east-asia", "africa", "americas", "oceania", "global",
)
BEATS = (
    "diplomacy", "energy", "security", "trade", "markets", "sport", "culture",
    "disasters", "courts", "politics", "business", "science",
)
TYPES = ("PER", "ORG", "LOC", "MISC")
HEADER_KEYS = ("topics", "region", "beat")
TYPE_ALIASES = {
    "PERSON": "PER", "PERS": "PER", "ORGANIZATION": "ORG", "ORGANISATION": "ORG",
    "LOCATION": "LOC", "GPE": "LOC", "PLACE": "LOC", "MISCELLANEOUS": "MISC",
}
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
MONTH_DAYS = dict(zip(MONTHS, (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)))

MIN_WORDS, MAX_WORDS = 120, 1600
SPLITS = ("train", "dev", "test")
SPLIT_SHARES = (0.70, 0.15, 0.15)
# batch1.md .. batch{FROZEN_BATCHES}.md keep the 70/15/15 split they were built
# with; later batches are dealt to train/dev only, with LATER_SHARES.
FROZEN_BATCHES = 5
LATER_SPLITS = ("train", "dev")
LATER_SHARES = (0.85, 0.15)
HELDOUT = "heldout"

TARGET_ARTICLES = 240
TARGET_PER_TOPIC = 60
TARGET_MULTI_TOPIC = 40
TARGET_NO_TOPIC = 50
TARGET_MENTIONS = 4000
TARGET_PER_TYPE = 500
TARGET_CA_CAUCASUS_SHARE = 0.25

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SRC = os.path.join(ROOT, "data", "src")
DEFAULT_OUT = os.path.join(ROOT, "data")

ID_RE = re.compile(r"[a-z0-9-]+")
ID_LINE_RE = re.compile(r"=== id: ([a-z0-9-]+)")
LOOSE_ID_LINE_RE = re.compile(r"===+\s*(?:id\s*:?)?\s*(.*?)\s*", re.IGNORECASE)
HEADER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_ -]*?)\s*:(.*)")
DATELINE_RE = re.compile(
    r"(?P<city>[^,\n][^\n]{0,79}?), (?P<month>" + "|".join(MONTHS) + r") (?P<day>\d{1,2}) - (?=\S)"
)
LOOSE_DATELINE_RE = re.compile(
    r"(?P<city>[^,]{1,60}),\s*(?P<month>[A-Za-z]+)\.?\s*(?P<day>\d{1,2})(?P<sep>\s*[-\u2010-\u2015:]\s*)"
)
LABEL_RE = re.compile(r"\{([^{}\[\]\n]*)\}")


# --------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------

@dataclass(order=True)
class Problem:
    file_index: int
    line: int
    seq: int
    file: str = field(compare=False)
    message: str = field(compare=False)
    warning: bool = field(compare=False, default=False)

    def format(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}: {kind}{self.message}"


class Reporter:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seq = 0
        self._file_index: dict[str, int] = {}

    def _idx(self, file: str) -> int:
        return self._file_index.setdefault(file, len(self._file_index))

    def error(self, file: str, line: int, message: str) -> None:
        self._seq += 1
        self.problems.append(Problem(self._idx(file), line, self._seq, file, message))

    def warn(self, file: str, line: int, message: str) -> None:
        self._seq += 1
        self.problems.append(Problem(self._idx(file), line, self._seq, file, message, True))

    @property
    def n_errors(self) -> int:
        return sum(not p.warning for p in self.problems)

    @property
    def n_warnings(self) -> int:
        return sum(p.warning for p in self.problems)

    def dump(self, out, warnings: bool = True) -> None:
        for p in sorted(self.problems):
            if p.warning and not warnings:
                continue
            print(p.format(), file=out)


def suggest(value: str, choices) -> str:
    low = value.lower()
    for c in choices:
        if c.lower() == low:
            return f" (did you mean '{c}'?)"
    close = difflib.get_close_matches(low, [c.lower() for c in choices], n=1, cutoff=0.6)
    if close:
        orig = next(c for c in choices if c.lower() == close[0])
        return f" (did you mean '{orig}'?)"
    return ""


def show(s: str, limit: int = 40) -> str:
    """Short printable rendering of a snippet for messages."""
    s = s.replace("\n", " ")
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return s


# --------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------

@dataclass
class Entity:
    start: int          # offset within the article text
    end: int
    label: str
    surface: str
    line: int           # source line (for messages)


@dataclass
class Block:
    """A headline or a paragraph after markup removal."""
    text: str
    entities: list      # list[Entity], offsets relative to this block
    src_lines: list     # plain offset -> source line number


@dataclass
class Article:
    id: str | None
    file: str
    line: int                       # line of the '=== id:' line
    topics: list = field(default_factory=list)
    region: str | None = None
    beat: str | None = None
    headline: Block | None = None
    paragraphs: list = field(default_factory=list)
    text: str = ""
    entities: list = field(default_factory=list)   # list[Entity], article offsets
    words: int = 0

    def record(self) -> dict:
        return {
            "id": self.id,
            "text": self.text,
            "entities": [{"start": e.start, "end": e.end, "label": e.label} for e in self.entities],
            "topics": list(self.topics),
        }


# --------------------------------------------------------------------------
# Markup parsing
# --------------------------------------------------------------------------

def strip_markup(raw: str) -> str:
    """Remove (possibly nested) entity markup from a raw surface, for recovery."""
    prev = None
    while prev != raw:
        prev = raw
        raw = re.sub(r"\[([^\[\]{}]*)\]\{[^{}\[\]]*\}", r"\1", raw)
    return raw.replace("[", "").replace("]", "")


def parse_block(rep: Reporter, file: str, lines: list[tuple[int, str]]) -> Block:
    """Parse the entity markup of one headline/paragraph.

    ``lines`` holds (line number, raw line) pairs of consecutive non-blank lines;
    they are joined with single spaces (leading/trailing whitespace of each
    line is dropped).
    """
    # Build the joined source string and a map from source offset to (line, col).
    parts: list[str] = []
    starts: list[int] = []       # source offset where each line begins
    line_info: list[tuple[int, int]] = []   # (line number, leading ws stripped)
    pos = 0
    for k, (lineno, raw) in enumerate(lines):
        stripped = raw.strip()
        lead = len(raw) - len(raw.lstrip())
        if k:
            parts.append(" ")
            pos += 1
        starts.append(pos)
        line_info.append((lineno, lead))
        parts.append(stripped)
        pos += len(stripped)
    s = "".join(parts)
    n = len(s)

    def where(p: int) -> tuple[int, int]:
        k = max(0, bisect.bisect_right(starts, p) - 1)
        lineno, lead = line_info[k]
        return lineno, p - starts[k] + lead + 1

    def err(p: int, msg: str) -> None:
        lineno, col = where(p)
        rep.error(file, lineno, f"{msg} (col {col})")

    def warn(p: int, msg: str) -> None:
        lineno, col = where(p)
        rep.warn(file, lineno, f"{msg} (col {col})")

    # Suspicious characters.
    for p, ch in enumerate(s):
        if ch == "\t":
            warn(p, "tab character in text (use a space)")
        elif ch in "\u00a0\u2007\u202f":
            warn(p, f"non-breaking space U+{ord(ch):04X} in text (use a normal space)")
        else:
            cat = unicodedata.category(ch)
            if cat == "Cc":
                err(p, f"control character U+{ord(ch):04X} in text")
            elif cat == "Cf":
                warn(p, f"invisible format character U+{ord(ch):04X} ({unicodedata.name(ch, '?')}) in text")

    out: list[str] = []
    out_len = 0
    src_of_out: list[int] = []     # plain offset -> source offset
    ents: list[Entity] = []

    def emit(text: str, src_start: int, map_each: bool = True) -> None:
        nonlocal out_len
        out.append(text)
        for k in range(len(text)):
            src_of_out.append(src_start + k if map_each else src_start)
        out_len += len(text)

    i = 0
    while i < n:
        c = s[i]
        if c in "]{}":
            if c == "{":
                m = LABEL_RE.match(s, i)
                if m:
                    err(i, f"stray '{m.group(0)}' not preceded by '[surface]'")
                    i = m.end()
                    continue
            err(i, f"stray '{c}' outside entity markup")
            i += 1
            continue
        if c != "[":
            j = i
            while j < n and s[j] not in "[]{}":
                j += 1
            emit(s[i:j], i)
            i = j
            continue

        # c == '[' : find the matching ']'.
        j = i + 1
        depth = 1
        nested = False
        missing_close = False
        while j < n:
            ch = s[j]
            if ch == "[":
                depth += 1
                nested = True
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    break
            elif ch == "{" and depth == 1:
                if nested and s[j - 1] == "]":
                    m = LABEL_RE.match(s, j)
                    if m:
                        j = m.end()
                        continue
                missing_close = True
                break
            elif ch == "}" and depth == 1 and not nested:
                missing_close = True
                break
            j += 1
        if j >= n or missing_close:
            if missing_close:
                err(i, f"'[' is not closed before '{s[j]}': expected '[surface]{{TYPE}}' "
                       f"near '{show(s[i:j + 6])}'")
                # Recover: treat s[i+1:j] as the surface if a label follows.
                m = LABEL_RE.match(s, j)
                surface = s[i + 1:j]
                emit(surface, i + 1)
                i = m.end() if m else j
            else:
                err(i, f"unclosed '[' near '{show(s[i:i + 30])}'")
                i += 1
            continue

        raw_surface = s[i + 1:j]
        if nested:
            err(i, f"nested entity markup in '{show(raw_surface, 60)}': annotate only the outer span")
            surface = strip_markup(raw_surface)
        else:
            surface = raw_surface
        k = j + 1
        label: str | None = None
        after = k
        if k < n and s[k] == "{":
            m = LABEL_RE.match(s, k)
            if m:
                label = m.group(1)
                after = m.end()
            else:
                m2 = re.compile(r"\{[A-Za-z ]*").match(s, k)
                err(k, f"unclosed '{{' after '[{show(surface)}]': expected '{{TYPE}}'")
                after = m2.end()
        else:
            m = re.compile(r"\s+\{([^{}\[\]\n]*)\}").match(s, k)
            if m:
                err(k, f"space between ']' and '{{' in '[{show(surface)}]{show(s[k:m.end()])}'"
                       f": write '[{show(surface)}]{{{m.group(1).strip()}}}'")
                label = m.group(1)
                after = m.end()
            elif k < n and s[k] == "(":
                err(i, f"Markdown link '[{show(surface)}](...)' is not allowed; "
                       f"entity markup is '[surface]{{TYPE}}'")
            else:
                err(i, f"'[{show(surface)}]' is not followed by '{{TYPE}}' "
                       f"(brackets are only allowed as entity markup)")

        # Surface checks.
        if surface == "":
            err(i, "empty entity surface '[]'")
        elif surface.strip() == "":
            err(i, "entity surface consists only of whitespace")
        else:
            if surface[0].isspace():
                err(i, f"entity surface '[{show(surface)}]' starts with whitespace")
            if surface[-1].isspace():
                err(i, f"entity surface '[{show(surface)}]' ends with whitespace")
            if "  " in surface:
                warn(i, f"entity surface '{show(surface)}' contains a double space")
            if re.search(r"['\u2019]s$", surface):
                warn(i, f"entity surface '{show(surface)}' ends in possessive 's; "
                        f"keep it outside the brackets unless it is part of the name")
        if label is not None and label not in TYPES:
            canon = label.strip().upper()
            canon = TYPE_ALIASES.get(canon, canon)
            if canon in TYPES:
                err(k, f"entity type '{{{label}}}' must be written exactly '{{{canon}}}'")
            else:
                err(k, f"unknown entity type '{{{label}}}' (expected one of PER, ORG, LOC, MISC)"
                       + suggest(label, TYPES))
            label = canon if canon in TYPES else None

        start = out_len
        emit(surface, i + 1, map_each=not nested)
        if label is not None and surface and surface == surface.strip():
            ents.append(Entity(start, out_len, label, surface, where(i)[0]))
            # Word boundary checks (warnings).
            if i > 0 and (s[i - 1].isalnum()) and out_len - len(surface) > 0:
                warn(i, f"entity '[{show(surface)}]' starts inside a word "
                        f"(letter/digit directly before '[')")
            if after < n and s[after].isalnum():
                warn(after, f"entity '[{show(surface)}]{{{label}}}' ends inside a word "
                            f"('{s[after]}' directly after '}}')")
        i = after

    text = "".join(out)
    src_lines = [where(p)[0] for p in src_of_out]
    return Block(text, ents, src_lines)


# --------------------------------------------------------------------------
# File parsing
# --------------------------------------------------------------------------

def read_text(rep: Reporter, path: str) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        rep.error(path, 1, f"cannot read file: {e.strerror}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        rep.error(path, line, f"file is not valid UTF-8 (byte 0x{data[e.start]:02x})")
        text = data.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return [ln.rstrip("\r") for ln in text.split("\n")]


def parse_file(rep: Reporter, path: str) -> list[Article]:
    lines = read_text(rep, path)
    if lines is None:
        return []
    # Split into article chunks at lines starting with '==='.
    chunks: list[tuple[int, list[str]]] = []
    preamble_reported = False
    for idx, ln in enumerate(lines):
        lineno = idx + 1
        if ln.startswith("==="):
            chunks.append((lineno, [ln]))
        elif chunks:
            chunks[-1][1].append(ln)
        elif ln.strip() and not preamble_reported:
            rep.error(path, lineno, "text before the first '=== id: ...' line "
                                    "(every article must start with '=== id: <id>')")
            preamble_reported = True
    if not chunks and not preamble_reported:
        rep.error(path, 1, "no articles found (expected lines starting with '=== id: <id>')")
    return [parse_article(rep, path, start, chunk) for start, chunk in chunks]


def parse_header_line(rep: Reporter, path: str, lineno: int, ln: str, art: Article,
                      seen: dict) -> None:
    m = HEADER_RE.fullmatch(ln.strip())
    if not m or ln.startswith((" ", "\t")):
        rep.error(path, lineno, f"expected a header line 'key: value', got '{show(ln)}' "
                                f"(is the blank line between header and headline missing?)")
        return
    key, value = m.group(1), m.group(2).strip()
    if key not in HEADER_KEYS:
        hint = suggest(key, HEADER_KEYS)
        if not hint:
            hint = " (is the blank line between header and headline missing?)"
        rep.error(path, lineno, f"unknown header key '{key}' (expected topics, region, beat){hint}")
        return
    if key in seen:
        rep.error(path, lineno, f"duplicate header key '{key}' (first on line {seen[key]})")
        return
    seen[key] = lineno
    if key == "topics":
        if value == "":
            art.topics = []
            return
        topics = []
        for item in value.split(","):
            t = item.strip()
            if not t:
                rep.error(path, lineno, f"empty item in topics list '{value}'")
                continue
            if t not in TOPICS:
                hint = suggest(t, TOPICS)
                if len(t.split()) > 1 and all(x in TOPICS for x in t.split()):
                    hint = " (separate topics with commas)"
                rep.error(path, lineno, f"unknown topic '{t}' (expected energy, borders, defense, trade)"
                                        + hint)
                continue
            if t in topics:
                rep.error(path, lineno, f"topic '{t}' listed twice")
                continue
            topics.append(t)
        art.topics = [t for t in TOPICS if t in topics]     # canonical order
    elif key == "region":
        if value == "":
            rep.error(path, lineno, "empty region")
        elif value not in REGIONS:
            rep.error(path, lineno, f"unknown region '{value}' (expected one of {', '.join(REGIONS)})"
                                    + suggest(value, REGIONS))
        else:
            art.region = value
    elif key == "beat":
        if value == "":
            rep.error(path, lineno, "empty beat")
        elif value not in BEATS:
            rep.error(path, lineno, f"unknown beat '{value}' (expected one of {', '.join(BEATS)})"
                                    + suggest(value, BEATS))
        else:
            art.beat = value


def check_dateline(rep: Reporter, path: str, block: Block, lineno: int, art: Article) -> None:
    text = block.text
    m = DATELINE_RE.match(text)
    if m:
        month, day = m.group("month"), int(m.group("day"))
        if month not in MONTHS:
            rep.error(path, lineno, f"dateline month '{month}' is not a full English month name"
                                    + suggest(month, MONTHS))
        elif not 1 <= day <= MONTH_DAYS[month]:
            rep.error(path, lineno, f"dateline day '{month} {day}' does not exist")
        city_end = len(m.group("city"))
        if m.group("city") != m.group("city").strip():
            rep.error(path, lineno, "dateline city has leading/trailing whitespace")
        if not any(e.start == 0 and e.end == city_end and e.label == "LOC" for e in block.entities):
            if not any(e.start < city_end for e in block.entities):
                rep.warn(path, lineno, f"dateline city '{show(m.group('city'))}' is not annotated "
                                       f"(expected '[{show(m.group('city'))}]{{LOC}}')")
        return
    lm = LOOSE_DATELINE_RE.match(text)
    if lm:
        sep = lm.group("sep")
        problems = []
        if lm.group("month") not in MONTHS:
            problems.append(f"month '{lm.group('month')}' must be a full English month name"
                            + suggest(lm.group("month"), MONTHS))
        if sep != " - ":
            dash = sep.strip()
            if dash and dash != "-":
                problems.append(f"separator must be ' - ' (space, ASCII hyphen, space), "
                                f"found U+{ord(dash[0]):04X} '{dash}'")
            else:
                problems.append(f"separator must be ' - ' (space, ASCII hyphen, space), found '{sep}'")
        if text[lm.start("month") - 2: lm.start("month")] != ", ":
            problems.append("city must be followed by ', ' (comma, one space)")
        if not problems:
            problems.append("expected 'CITY, Month Day - ' followed by text")
        rep.error(path, lineno, "malformed dateline '" + show(text[: lm.end()], 50) + "': "
                                + "; ".join(problems))
        return
    rep.error(path, lineno, f"missing dateline: the first paragraph must open with "
                            f"'CITY, Month Day - ' (found '{show(text, 40)}')")


def parse_article(rep: Reporter, path: str, start: int, chunk: list[str]) -> Article:
    first = chunk[0].rstrip()
    m = ID_LINE_RE.fullmatch(first)
    art_id: str | None = None
    if m:
        art_id = m.group(1)
    else:
        lm = LOOSE_ID_LINE_RE.fullmatch(first)
        candidate = lm.group(1) if lm else ""
        if candidate and not ID_RE.fullmatch(candidate) and first.startswith("=== id: "):
            rep.error(path, start, f"invalid id '{candidate}': ids must be lowercase [a-z0-9-]+")
        else:
            rep.error(path, start, f"malformed article start line '{show(first, 50)}': "
                                   f"expected '=== id: <id>'")
        if candidate and ID_RE.fullmatch(candidate.lower()):
            art_id = candidate.lower()
    art = Article(art_id, path, start)

    # Header.
    i = 1
    seen: dict = {}
    while i < len(chunk) and chunk[i].strip():
        parse_header_line(rep, path, start + i, chunk[i], art, seen)
        i += 1
    if i == 1:
        rep.error(path, start, "missing header: 'topics:', 'region:' and 'beat:' lines must "
                               "directly follow the '=== id:' line")
    else:
        for key in HEADER_KEYS:
            if key not in seen:
                rep.error(path, start, f"missing header line '{key}:'")

    # Blocks of consecutive non-blank lines.
    blocks: list[list[tuple[int, str]]] = []
    cur: list[tuple[int, str]] = []
    for k in range(i, len(chunk)):
        ln = chunk[k]
        if ln.strip():
            cur.append((start + k, ln))
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)

    if not blocks:
        rep.error(path, start, "empty article: no headline and no body")
        return art

    head_lines = blocks[0]
    if len(head_lines) > 1:
        # Either the blank line before the first paragraph is missing (the
        # second line opens with a dateline) or the headline is wrapped.
        k = next((k for k in range(1, len(head_lines))
                  if LOOSE_DATELINE_RE.match(strip_markup(head_lines[k][1].strip()))), None)
        if k is not None:
            rep.error(path, head_lines[0][0],
                      f"headline must be a single line: missing blank line between the headline "
                      f"and the dateline paragraph on line {head_lines[k][0]}")
            blocks = [head_lines[:k], head_lines[k:]] + blocks[1:]
        else:
            rep.error(path, head_lines[0][0],
                      f"headline must be a single line, found {len(head_lines)} lines")
    art.headline = parse_block(rep, path, blocks[0])
    if DATELINE_RE.match(art.headline.text):
        rep.error(path, blocks[0][0][0], "missing headline: the first line after the header "
                                         "looks like a dateline paragraph")
    if art.headline.text.strip() == "":
        rep.error(path, blocks[0][0][0], "empty headline")

    art.paragraphs = [parse_block(rep, path, b) for b in blocks[1:]]
    if not art.paragraphs:
        rep.error(path, blocks[0][0][0], "article has a headline but no body paragraphs "
                                         "(and so no dateline)")
    else:
        check_dateline(rep, path, art.paragraphs[0], blocks[1][0][0], art)

    # Assemble the text and article-level entity offsets.
    pieces = [art.headline] + art.paragraphs
    text_parts = []
    offset = 0
    for b_i, b in enumerate(pieces):
        if b_i:
            text_parts.append("\n\n")
            offset += 2
        for e in b.entities:
            art.entities.append(Entity(e.start + offset, e.end + offset, e.label, e.surface, e.line))
        text_parts.append(b.text)
        offset += len(b.text)
    art.text = "".join(text_parts)
    art.entities.sort(key=lambda e: (e.start, e.end))
    art.words = len(art.text.split())
    if not MIN_WORDS <= art.words <= MAX_WORDS:
        rep.error(path, start, f"article '{art.id}' has {art.words} words (headline + body); "
                               f"must be {MIN_WORDS}-{MAX_WORDS}")
    consistency_warnings(rep, path, art, pieces)
    return art


def consistency_warnings(rep: Reporter, path: str, art: Article, pieces: list[Block]) -> None:
    """Warn about surfaces annotated in one place but left bare elsewhere in the
    same article, and about one surface annotated with different types."""
    labels: dict[str, dict[str, int]] = defaultdict(dict)
    for e in art.entities:
        labels[e.surface].setdefault(e.label, e.line)
    for surface, by_label in labels.items():
        if len(by_label) > 1:
            desc = ", ".join(f"{lab} (line {ln})" for lab, ln in by_label.items())
            rep.warn(path, min(by_label.values()),
                     f"'{show(surface)}' is annotated with different types in one article: {desc}")
    for b in pieces:
        covered = [False] * len(b.text)
        for e in b.entities:
            for p in range(e.start, e.end):
                covered[p] = True
        reported = set()
        for surface, by_label in labels.items():
            if len(surface) < 2:
                continue
            pat = re.compile(r"(?<![\w-])" + re.escape(surface) + r"(?![\w-])")
            for m in pat.finditer(b.text):
                if any(covered[m.start():m.end()]):
                    continue
                line = b.src_lines[m.start()] if b.src_lines else art.line
                if (surface, line) in reported:
                    continue
                reported.add((surface, line))
                lab = next(iter(by_label))
                rep.warn(path, line, f"'{show(surface)}' is annotated as {lab} elsewhere in "
                                     f"article '{art.id}' but not here")


def parse_files(rep: Reporter, paths: list[str]) -> list[tuple[str, list[Article]]]:
    parsed = [(p, parse_file(rep, p)) for p in paths]
    seen: dict[str, tuple[str, int]] = {}
    for p, arts in parsed:
        for a in arts:
            if a.id is None:
                continue
            if a.id in seen:
                f0, l0 = seen[a.id]
                rep.error(p, a.line, f"duplicate id '{a.id}' (first used at {f0}:{l0})")
            else:
                seen[a.id] = (p, a.line)
    return parsed


def _natural_key(p: str):
    name = os.path.basename(p)
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def batch_files(src_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(src_dir, "batch*.md")), key=_natural_key)


def heldout_files(src_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(src_dir, "heldout*.md")), key=_natural_key)


def is_frozen_batch(path: str) -> bool:
    """True for batch1.md .. batch{FROZEN_BATCHES}.md (exact names only)."""
    m = re.fullmatch(r"batch([0-9]+)\.md", os.path.basename(path))
    return bool(m) and 1 <= int(m.group(1)) <= FROZEN_BATCHES


def rel(path: str) -> str:
    try:
        r = os.path.relpath(path)
    except ValueError:
        return path
    return path if r.startswith("../..") else r


# --------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------

def stable_hash(art_id: str) -> str:
    return hashlib.sha1(art_id.encode("utf-8")).hexdigest()


def split_articles(articles: list[Article], splits=SPLITS, shares=SPLIT_SHARES) -> dict[str, str]:
    """Deterministic stratified split (70/15/15 train/dev/test by default).

    Articles are visited in sha1(id) order and each is dealt to the split whose
    quota is most behind, summed over the strata it belongs to: the whole
    corpus, its exact topic set (sorted topic tuple) and each of its topics.
    The result depends only on the set of (id, topics) pairs and the shares.
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(shares))
    assign: dict[str, str] = {}
    for a in sorted(articles, key=lambda a: (stable_hash(a.id), a.id)):
        strata = ["all", "set:" + ",".join(sorted(a.topics))]
        strata += ["topic:" + t for t in a.topics]
        best, best_score = 0, None
        for k, share in enumerate(shares):
            score = 0.0
            for s in strata:
                c = counts[s]
                score += share * (sum(c) + 1) - c[k]
            # the exact topic set counts double so that small groups are dealt
            # to their shares as well
            c = counts[strata[1]]
            score += share * (sum(c) + 1) - c[k]
            if best_score is None or score > best_score + 1e-9:
                best, best_score = k, score
        for s in strata:
            counts[s][best] += 1
        assign[a.id] = splits[best]
    return assign


def assign_splits(parsed: list[tuple[str, list[Article]]]) -> dict[str, str]:
    """Split of every batch article: the frozen batches 70/15/15 among
    themselves; each later batch file 85/15 train/dev on its own, so that
    adding a file never moves an article of another file."""
    frozen = [a for p, arts in parsed if is_frozen_batch(p) for a in arts]
    assign = split_articles(frozen)
    for p, arts in parsed:
        if not is_frozen_batch(p):
            assign.update(split_articles(arts, LATER_SPLITS, LATER_SHARES))
    return assign


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------

def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return out


def drop_columns(lines: list[str], drop: tuple[str, ...]) -> list[str]:
    """Remove the named columns from the Markdown tables in ``lines`` (used for
    a single-split table, where 'total' repeats the split)."""
    out: list[str] = []
    keep: list[int] | None = None
    for ln in lines:
        if not ln.startswith("|"):
            keep = None
            out.append(ln)
            continue
        cells = ln.strip("|").split("|")
        if keep is None:                          # header row
            keep = [i for i, c in enumerate(cells) if c.strip() not in drop]
        out.append("|" + "|".join(cells[i] for i in keep if i < len(cells)) + "|")
    return out


def corpus_stats(by_split: dict[str, list[Article]], level: str = "##",
                 targets: bool = True) -> tuple[list[str], bool]:
    names = list(by_split)
    allarts = [a for s in names for a in by_split[s]]
    total = len(allarts)
    L: list[str] = []
    cols = names + ["total"]

    def row(label, fn):
        vals = [fn(by_split[s]) for s in names] + [fn(allarts)]
        return [label] + vals

    L += [f"{level} Articles and words", ""]
    L += table(["", *cols], [
        row("articles", len),
        row("share", lambda arts: pct(len(arts), total)),
        row("words (whitespace tokens)", lambda arts: sum(a.words for a in arts)),
        row("mean words / article", lambda arts: f"{sum(a.words for a in arts) / len(arts):.0f}" if arts else "-"),
    ])
    L += ["", f"{level} Entity mentions", ""]
    rows = [row(t, lambda arts, t=t: sum(e.label == t for a in arts for e in a.entities)) for t in TYPES]
    rows.append(row("all", lambda arts: sum(len(a.entities) for a in arts)))
    L += table(["type", *cols], rows)
    L += ["", f"{level} Topics (articles per topic)", ""]
    rows = []
    for t in TOPICS:
        r = row(t, lambda arts, t=t: sum(t in a.topics for a in arts))
        r.append(" / ".join(pct(x, r[-1]) for x in r[1:-1]))
        rows.append(r)
    r = row(">= 2 topics", lambda arts: sum(len(a.topics) >= 2 for a in arts))
    r.append(" / ".join(pct(x, r[-1]) for x in r[1:-1]))
    rows.append(r)
    r = row("no topic", lambda arts: sum(not a.topics for a in arts))
    r.append(" / ".join(pct(x, r[-1]) for x in r[1:-1]))
    rows.append(r)
    L += table(["topic", *cols, "split shares"], rows)
    L += ["", f"{level} Topic sets", ""]
    sets = sorted({tuple(a.topics) for a in allarts}, key=lambda t: (len(t), [TOPICS.index(x) for x in t]))
    L += table(["topic set", *cols], [
        row(", ".join(ts) if ts else "(none)", lambda arts, ts=ts: sum(tuple(a.topics) == ts for a in arts))
        for ts in sets])
    L += ["", f"{level} Regions", ""]
    rows = []
    for rg in REGIONS:
        r = row(rg, lambda arts, rg=rg: sum(a.region == rg for a in arts))
        if r[-1]:
            r.append(pct(r[-1], total))
            rows.append(r)
    ca = row("central-asia + caucasus", lambda arts: sum(a.region in ("central-asia", "caucasus") for a in arts))
    ca.append(pct(ca[-1], total))
    rows.append(ca)
    L += table(["region", *cols, "share"], rows)
    L += ["", f"{level} Beats", ""]
    rows = []
    for b in BEATS:
        r = row(b, lambda arts, b=b: sum(a.beat == b for a in arts))
        if r[-1]:
            rows.append(r)
    L += table(["beat", *cols], rows)

    if len(names) == 1:
        L = drop_columns(L, ("total", "split shares"))
    if not targets:
        return L, True

    # Targets.
    mentions = Counter(e.label for a in allarts for e in a.entities)
    topic_n = Counter(t for a in allarts for t in a.topics)
    multi = sum(len(a.topics) >= 2 for a in allarts)
    none = sum(not a.topics for a in allarts)
    ca_n = sum(a.region in ("central-asia", "caucasus") for a in allarts)
    share = ca_n / total if total else 0.0
    checks = [(f">= {TARGET_ARTICLES} articles", total, total >= TARGET_ARTICLES)]
    for t in TOPICS:
        checks.append((f"topic {t} >= {TARGET_PER_TOPIC} articles", topic_n[t], topic_n[t] >= TARGET_PER_TOPIC))
    checks.append((f">= {TARGET_MULTI_TOPIC} articles with >= 2 topics", multi, multi >= TARGET_MULTI_TOPIC))
    checks.append((f">= {TARGET_NO_TOPIC} articles with no topic", none, none >= TARGET_NO_TOPIC))
    nm = sum(mentions.values())
    checks.append((f">= {TARGET_MENTIONS} entity mentions", nm, nm >= TARGET_MENTIONS))
    for t in TYPES:
        checks.append((f"{t} >= {TARGET_PER_TYPE} mentions", mentions[t], mentions[t] >= TARGET_PER_TYPE))
    checks.append((f"central-asia + caucasus >= {TARGET_CA_CAUCASUS_SHARE:.0%} of articles",
                   f"{ca_n} ({pct(ca_n, total)})", share >= TARGET_CA_CAUCASUS_SHARE))
    L += ["", "## Targets", ""]
    L += table(["target", "value", "result"], [[n, v, "PASS" if ok else "FAIL"] for n, v, ok in checks])
    all_ok = all(ok for _, _, ok in checks)
    return L, all_ok


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def atomic_write(path: str, content: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def verify(art: Article) -> None:
    for e in art.entities:
        if art.text[e.start:e.end] != e.surface:
            raise AssertionError(f"{art.file}:{e.line}: offset check failed for '{e.surface}' in "
                                 f"'{art.id}': text[{e.start}:{e.end}] = {art.text[e.start:e.end]!r}")
    for a, b in zip(art.entities, art.entities[1:]):
        if b.start < a.end:
            raise AssertionError(f"{art.file}: overlapping entities in '{art.id}'")
    if re.search(r"[\[\]{}]", art.text):
        raise AssertionError(f"{art.file}:{art.line}: markup characters left in text of '{art.id}'")


def parse_heldout(paths: list[str], taken: dict[str, tuple[str, int]], warnings: bool
                  ) -> tuple[list[tuple[str, list[Article]]], list[tuple[str, int]]]:
    """Parse each held-out file on its own.  A file with an error (markup, or
    an id already used in a batch file or an earlier held-out file) is
    reported and left out; returns (accepted files, [(rejected file, errors)])."""
    accepted: list[tuple[str, list[Article]]] = []
    rejected: list[tuple[str, int]] = []
    for p in paths:
        rep = Reporter()
        arts = parse_file(rep, p)
        local: dict[str, int] = {}
        for a in arts:
            if a.id is None:
                continue
            if a.id in taken:
                f0, l0 = taken[a.id]
                rep.error(p, a.line, f"duplicate id '{a.id}' (first used at {f0}:{l0})")
            elif a.id in local:
                rep.error(p, a.line, f"duplicate id '{a.id}' (first used at {p}:{local[a.id]})")
            else:
                local[a.id] = a.line
        rep.dump(sys.stdout, warnings=warnings)
        if rep.n_errors:
            print(f"{p}: {rep.n_errors} error(s): left out of {HELDOUT}.jsonl "
                  f"(run --check {p} for details)", file=sys.stderr)
            rejected.append((p, rep.n_errors))
            continue
        for a in arts:
            verify(a)
            taken[a.id] = (p, a.line)
        accepted.append((p, arts))
    return accepted, rejected


def cmd_build(args) -> int:
    rep = Reporter()
    paths = batch_files(args.src_dir)
    if not paths:
        print(f"error: no batch*.md files in {rel(args.src_dir)}", file=sys.stderr)
        return 1
    parsed = parse_files(rep, [rel(p) for p in paths])
    rep.dump(sys.stdout, warnings=not args.no_warnings)
    if rep.n_errors:
        print(f"{rep.n_errors} error(s), {rep.n_warnings} warning(s); nothing written. "
              f"Run with --check for details.", file=sys.stderr)
        return 1
    articles = [a for _, arts in parsed for a in arts]
    for a in articles:
        verify(a)
    taken = {a.id: (p, a.line) for p, arts in parsed for a in arts}
    held_parsed, held_rejected = parse_heldout(
        [rel(p) for p in heldout_files(args.src_dir)], taken, not args.no_warnings)
    held_articles = [a for _, arts in held_parsed for a in arts]

    assign = assign_splits(parsed)
    by_split: dict[str, list[Article]] = {s: [] for s in SPLITS}
    for a in articles:                       # source order within each split
        by_split[assign[a.id]].append(a)

    outputs = {s: by_split[s] for s in SPLITS}
    outputs[HELDOUT] = held_articles
    for s, arts in outputs.items():
        buf = io.StringIO()
        for a in arts:
            buf.write(json.dumps(a.record(), ensure_ascii=False) + "\n")
        atomic_write(os.path.join(args.out_dir, f"{s}.jsonl"), buf.getvalue())

    body, ok = corpus_stats(by_split)
    src_names = ", ".join(f"`{os.path.basename(p)}`" for p in paths)
    held_names = ", ".join(f"`{os.path.basename(p)}`" for p, _ in held_parsed)
    md = ["# Corpus statistics", "",
          "Generated by `python3 scripts/build_corpus.py` from " + src_names
          + (" and " + held_names if held_names else "") + "; do not edit by hand.",
          "Words are whitespace-separated tokens of the article text (headline + body).", ""]
    md += ["## Sources", "",
           f"`batch1.md` to `batch{FROZEN_BATCHES}.md` keep the 70/15/15 train/dev/test split "
           f"computed over their articles alone; each later batch file is dealt to train and dev "
           f"only ({LATER_SHARES[0]:.0%}/{LATER_SHARES[1]:.0%}, over that file alone); `heldout*.md` files go to "
           f"`{HELDOUT}.jsonl`, which is never trained or tuned on and is not part of the "
           f"tables and targets below (see the last section).", ""]
    src_rows = []
    for p, arts in parsed:
        c = Counter(assign[a.id] for a in arts)
        src_rows.append([f"`{os.path.basename(p)}`"] + [c[s] for s in SPLITS] + [0, len(arts)])
    for p, arts in held_parsed:
        src_rows.append([f"`{os.path.basename(p)}`"] + [0] * len(SPLITS) + [len(arts), len(arts)])
    for p, n in held_rejected:
        src_rows.append([f"`{os.path.basename(p)}` (left out: {n} error(s))"]
                        + [0] * len(SPLITS) + [0, 0])
    md += table(["file", *SPLITS, HELDOUT, "total"], src_rows)
    md.append("")
    md += body
    md += ["", f"## Held-out set (`{HELDOUT}.jsonl`)", "",
           "Never trained or tuned on: no thresholds, refits or model selection use it. "
           "Report it separately from dev.", ""]
    if held_articles:
        hbody, _ = corpus_stats({HELDOUT: held_articles}, level="###", targets=False)
        md += hbody
    else:
        md.append("No `heldout*.md` file was built into it"
                  + (" (left out with errors: " + ", ".join(f"`{os.path.basename(p)}`"
                                                            for p, _ in held_rejected) + ")"
                     if held_rejected else "") + ": it is empty.")
    md.append("")
    content = "\n".join(md)
    atomic_write(os.path.join(args.out_dir, "STATS.md"), content)
    print(content)
    outs = ", ".join(rel(os.path.join(args.out_dir, f)) for f in
                     [f"{s}.jsonl" for s in outputs] + ["STATS.md"])
    print(f"wrote {outs}", file=sys.stderr)
    if held_rejected:
        print("held-out file(s) left out with errors: "
              + ", ".join(p for p, _ in held_rejected), file=sys.stderr)
    if not ok:
        print("some corpus targets FAIL (see Targets above)", file=sys.stderr)
    if args.strict and (not ok or held_rejected):
        return 2
    return 0


def file_stats(path: str, arts: list[Article]) -> list[str]:
    words = [a.words for a in arts]
    ments = Counter(e.label for a in arts for e in a.entities)
    tops = Counter(t for a in arts for t in a.topics)
    regs = Counter(a.region for a in arts)
    beats = Counter(a.beat for a in arts)
    ca = regs["central-asia"] + regs["caucasus"]
    out = [f"{path}: {len(arts)} articles, {sum(words)} words"
           + (f" (min {min(words)}, max {max(words)}, mean {sum(words) / len(words):.0f})" if words else "")]
    out.append(f"  mentions: {sum(ments.values())} ("
               + ", ".join(f"{t} {ments[t]}" for t in TYPES) + ")")
    out.append("  topics: " + ", ".join(f"{t} {tops[t]}" for t in TOPICS)
               + f"; >=2 topics {sum(len(a.topics) >= 2 for a in arts)}"
               + f"; none {sum(not a.topics for a in arts)}")
    out.append("  regions: " + ", ".join(f"{r} {regs[r]}" for r in REGIONS if regs[r])
               + f"; central-asia+caucasus {pct(ca, len(arts))}")
    out.append("  beats: " + ", ".join(f"{b} {beats[b]}" for b in BEATS if beats[b]))
    return out


def cmd_check(args) -> int:
    rep = Reporter()
    all_src = batch_files(args.src_dir) + heldout_files(args.src_dir)
    paths = args.check or [rel(p) for p in all_src]
    if not paths:
        print(f"error: no files given and no batch*.md or heldout*.md files in "
              f"{rel(args.src_dir)}", file=sys.stderr)
        return 1
    parsed = parse_files(rep, paths)

    # Ids must be unique across all batch and held-out files, including ones
    # not being checked.
    checked = {os.path.realpath(p) for p in paths}
    mine = {a.id: (p, a.line) for p, arts in parsed for a in arts if a.id}
    for other in all_src:
        if os.path.realpath(other) in checked:
            continue
        try:
            with open(other, encoding="utf-8", errors="replace") as f:
                for n, ln in enumerate(f, 1):
                    m = ID_LINE_RE.fullmatch(ln.rstrip("\r\n").rstrip())
                    if m and m.group(1) in mine:
                        p, line = mine[m.group(1)]
                        rep.error(p, line, f"duplicate id '{m.group(1)}' (also used at {rel(other)}:{n})")
        except OSError:
            pass

    rep.dump(sys.stdout, warnings=not args.no_warnings)
    if rep.n_errors:
        print(f"{rep.n_errors} error(s), {rep.n_warnings} warning(s)", file=sys.stderr)
        return 1
    for p, arts in parsed:
        print("\n".join(file_stats(p, arts)))
    if len(parsed) > 1:
        print("\n".join(file_stats("all files", [a for _, arts in parsed for a in arts])))
    print(f"OK: no errors, {rep.n_warnings} warning(s)", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Check newstag corpus markup files, or build data/{train,dev,test,heldout}.jsonl "
                    "and data/STATS.md from data/src/batch*.md and data/src/heldout*.md.")
    ap.add_argument("--check", nargs="*", metavar="FILE",
                    help="only check these markup files (default: all data/src/batch*.md and "
                         "data/src/heldout*.md) and "
                         "print problems as FILE:LINE: message; exit 1 on any error")
    ap.add_argument("--no-warnings", action="store_true",
                    help="do not print warnings (they never affect the exit status)")
    ap.add_argument("--strict", action="store_true",
                    help="build mode: exit 2 if a corpus target in STATS.md fails or a "
                         "held-out file was left out with errors")
    ap.add_argument("--src-dir", default=DEFAULT_SRC, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default=DEFAULT_OUT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        sys.stdout.reconfigure(encoding="utf-8")
    except (AttributeError, ValueError):
        pass
    if args.check is not None:
        return cmd_check(args)
    return cmd_build(args)


if __name__ == "__main__":
    sys.exit(main())
