"""Strict parsing, application and validation of proposed edits to the editable file.

An edit is either search/replace blocks or a whole new file (formats in EDIT_FORMAT, which is
also what an LLM is told). Anything doubtful is an InvalidEdit whose message becomes the
record's reason: nothing half-applied is ever trained.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from trainer.schema import EDITABLE_FILES

from agents.errors import InvalidEdit

EDITABLE = EDITABLE_FILES[0]

EDIT_FORMAT = f"""First write one line `DESCRIPTION: <what you changed, in one line>`,
then EITHER one or more search/replace blocks against {EDITABLE}, each written as:
  a line `{EDITABLE}`,
  a line `<<<<<<< SEARCH`,
  lines copied exactly, character for character, from the current {EDITABLE},
  a line `=======`,
  the lines that replace them,
  a line `>>>>>>> REPLACE`;
OR the whole new file: a line `FILE: {EDITABLE}` followed by a ```python code block holding
the complete new {EDITABLE}.
Each SEARCH text must occur exactly once in the file; keep it short (a few lines). Only
{EDITABLE} may be changed. Write nothing after the last block."""

# A module-level constant with a plain number: `NAME = 0.02   # comment`.
_CONST = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)(?P<eq>\s*=\s*)(?P<num>\d+\.\d+|\d+)(?P<rest>\s*(#.*)?)$")


def worked_example(source: str) -> str | None:
    """One concrete edit of `source` in the format above, built on a line that really is in it
    (a placeholder gets copied back by small models). None when the file has no plain numeric
    constant to show it on."""
    lines = source.split("\n")
    hits = [(m, ln) for ln in lines if (m := _CONST.match(ln)) and source.count(ln) == 1]
    if not hits:
        return None
    # a learning rate reads as a sensible experiment; any constant shows the format as well
    m, line = next(((m, ln) for m, ln in hits if "LR" in m.group("name")), hits[0])
    num = m.group("num")
    new_num = repr(float(num) * 2) if "." in num else str(int(num) * 2)
    new_line = f"{m.group('name')}{m.group('eq')}{new_num}{m.group('rest')}"
    return (f"DESCRIPTION: double {m.group('name')} ({num} -> {new_num})\n"
            f"{EDITABLE}\n<<<<<<< SEARCH\n{line}\n=======\n{new_line}\n>>>>>>> REPLACE")

_SEARCH = re.compile(r"^\s*<{5,9} ?SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9} ?REPLACE\s*$")
_FENCE = re.compile(r"^\s*```")
# Lenient where it is safe: markdown emphasis or a heading mark around the keyword.
_FILE = re.compile(r"^\s*[*_#]*\s*FILE\s*[*_]*:\s*[*_`]*([^\s*`]+)[*_`]*\s*$")
_DESC = re.compile(r"^\s*[*_#>]*\s*DESCRIPTION\s*[*_]*\s*:\s*[*_]*\s*(.*?)\s*[*_]*\s*$", re.I)
_FENCE_ONLY = re.compile(r"^\s*```[\w+-]*\s*$")
_PATHLIKE = re.compile(r"^[`*]*([\w./\\-]+\.\w+)[`*:]*$")


@dataclass
class ParsedEdit:
    """What an output asked for: blocks [(search, replace)] or a whole new file."""
    description: str
    blocks: list[tuple[str, str]]
    new_file: str | None
    size: int                       # bytes of edit payload, for the size limit


def _text(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidEdit(f"output is not valid UTF-8 (byte {e.start})") from None
    if "\x00" in raw:
        raise InvalidEdit("output contains NUL bytes")
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def _check_path(path: str) -> None:
    p = path.strip().strip("`'\"").lstrip("./")
    if p != EDITABLE:
        raise InvalidEdit(f"edit touches {path.strip()!r}; only {EDITABLE} may be changed")


def _block_path(lines: list[str], i: int) -> str | None:
    """The file name written just above a SEARCH marker at line i, if any (fences skipped)."""
    j = i - 1
    while j >= 0 and (not lines[j].strip() or _FENCE.match(lines[j])):
        j -= 1
    if j < 0 or i - j > 3:
        return None
    m = _PATHLIKE.match(lines[j].strip())
    return m.group(1) if m else None


def _unfence(section: list[str]) -> list[str]:
    """A section wrapped in its own ``` fence (models do that): drop the fence lines. A line
    that is only a fence is never Python, so nothing real is lost."""
    while section and _FENCE_ONLY.match(section[0]):
        section = section[1:]
    while section and _FENCE_ONLY.match(section[-1]):
        section = section[:-1]
    return section


def parse_edit(raw: str | bytes) -> ParsedEdit:
    """Parse a backend's output. Raises InvalidEdit: empty, no edit, truncated or nested
    blocks, a file other than the editable one, both forms at once."""
    text = _text(raw)
    if not text.strip():
        raise InvalidEdit("empty output")
    lines = text.split("\n")
    description = ""
    blocks: list[tuple[str, str]] = []
    new_file: str | None = None
    size = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if not description and (m := _DESC.match(line)):
            description = m.group(1)
        elif _SEARCH.match(line):
            path = _block_path(lines, i)
            if path is not None:
                _check_path(path)
            search, replace, part = [], [], "search"
            i += 1
            while True:
                if i >= len(lines):
                    missing = "=======" if part == "search" else ">>>>>>> REPLACE"
                    raise InvalidEdit(f"truncated edit block (no {missing})")
                cur = lines[i]
                if _SEARCH.match(cur):
                    raise InvalidEdit(f"nested SEARCH marker at line {i + 1}")
                if part == "search" and _DIVIDER.match(cur):
                    part = "replace"
                elif part == "replace" and _REPLACE.match(cur):
                    break
                elif part == "search" and _REPLACE.match(cur):
                    raise InvalidEdit(f"REPLACE marker before ======= at line {i + 1}")
                elif part == "replace" and _DIVIDER.match(cur):
                    raise InvalidEdit(f"second ======= in one block at line {i + 1}")
                else:
                    (search if part == "search" else replace).append(cur)
                i += 1
            s, r = "\n".join(_unfence(search)), "\n".join(_unfence(replace))
            if not s.strip():
                raise InvalidEdit("a SEARCH section is empty")
            blocks.append((s, r))
            size += len(s.encode()) + len(r.encode())
        elif _DIVIDER.match(line) or _REPLACE.match(line):
            raise InvalidEdit(f"stray edit marker at line {i + 1}")
        elif m := _FILE.match(line):
            _check_path(m.group(1))
            if new_file is not None:
                raise InvalidEdit("more than one whole-file block")
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j >= len(lines) or not _FENCE.match(lines[j]):
                raise InvalidEdit("FILE: line not followed by a ``` code block")
            body = []
            j += 1
            while j < len(lines) and not re.match(r"^```\s*$", lines[j]):
                body.append(lines[j])
                j += 1
            if j >= len(lines):
                raise InvalidEdit("truncated whole-file block (no closing ```)")
            new_file = "\n".join(body) + "\n"
            size += len(new_file.encode())
            i = j
        i += 1
    if blocks and new_file is not None:
        raise InvalidEdit("output has both search/replace blocks and a whole file")
    if not blocks and new_file is None:
        raise InvalidEdit("no edit found in output")
    return ParsedEdit(description=description, blocks=blocks, new_file=new_file, size=size)


def _replace_once(source: str, search: str, replace: str) -> str:
    n = source.count(search)
    if n == 1:
        return source.replace(search, replace, 1)
    if n > 1:
        raise InvalidEdit(f"SEARCH text occurs {n} times: {search.strip().splitlines()[0][:60]!r}")
    # LLMs often drop trailing spaces: match line by line ignoring trailing whitespace only.
    src_lines = source.split("\n")
    want = [x.rstrip() for x in search.split("\n")]
    hits = [k for k in range(len(src_lines) - len(want) + 1)
            if [x.rstrip() for x in src_lines[k:k + len(want)]] == want]
    if len(hits) != 1:
        first = search.strip().splitlines()[0][:60]
        raise InvalidEdit(f"SEARCH text not found in {EDITABLE}: {first!r}" if not hits
                          else f"SEARCH text occurs {len(hits)} times: {first!r}")
    k = hits[0]
    return "\n".join(src_lines[:k] + replace.split("\n") + src_lines[k + len(want):])


def apply_edit(parsed: ParsedEdit, source: str, *, max_edit_bytes: int) -> str:
    """The new file content. Raises InvalidEdit when a block does not apply or it is too big."""
    if parsed.size > max_edit_bytes:
        raise InvalidEdit(f"edit is {parsed.size} bytes, over the limit of {max_edit_bytes}")
    if parsed.new_file is not None:
        return parsed.new_file
    out = source
    for s, r in parsed.blocks:
        out = _replace_once(out, s, r)
    return out


def validate_source(new: str, old: str, *, max_file_bytes: int) -> None:
    """Raises InvalidEdit when `new` is unchanged, too large or does not compile."""
    if new == old:
        raise InvalidEdit("edit changes nothing")
    if len(new.encode()) > max_file_bytes:
        raise InvalidEdit(f"{EDITABLE} would be {len(new.encode())} bytes, over {max_file_bytes}")
    try:
        compile(new, EDITABLE, "exec")
    except SyntaxError as e:
        raise InvalidEdit(f"does not compile: {e.__class__.__name__} line {e.lineno}: {e.msg}") from None
    except ValueError as e:  # e.g. source with NUL bytes
        raise InvalidEdit(f"does not compile: {e}") from None


def line_delta(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) from `old` to `new`, as a multiset difference of lines: in
    process and O(n) (difflib took ~6 ms a decision in the coordinator). A moved line counts as
    neither; the net (added - removed) equals any line diff's net, which is what the promotion
    rule charges. The agent's record and the coordinator's margin both count with this."""
    return counter_delta(Counter(old.splitlines()), Counter(new.splitlines()))


def counter_delta(old: Counter, new: Counter) -> tuple[int, int]:
    """line_delta() of two texts already counted as multisets of lines (the coordinator caches them)."""
    return sum((new - old).values()), sum((old - new).values())


def diff_bytes(old: str, new: str) -> int:
    """Bytes on the changed lines (both sides): the size of a whole-file edit."""
    n = 0
    for d in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if d[:1] in "+-" and not d.startswith(("+++", "---")):
            n += len(d.encode()) - 1
    return n
