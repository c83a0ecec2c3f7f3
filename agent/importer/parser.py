"""Read a keepalived.conf into a tree of statements, the way keepalived reads it.

Owns the lexical rules: ``include`` (glob patterns, paths relative to the file
that includes them), ``#`` and ``!`` comments, double-quoted strings, ``$NAME=value``
definitions expanded as ``$NAME`` or ``${NAME}``, ``@id`` / ``@^id`` lines kept only
for (or all but) the configuration id, and ``{ }`` blocks. Every statement keeps the
file and line it came from. Never interprets a keyword and never writes anything.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

MAX_INCLUDE_DEPTH = 16
_VAR_DEF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_VAR_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class KeepalivedSyntaxError(Exception):
    """The file cannot be read as keepalived would read it (exit 1 of the importer)."""


@dataclass
class Statement:
    """One keyword with its arguments and, for a block, its children."""

    keyword: str
    args: list[str]
    file: str
    line: int
    children: list[Statement] = field(default_factory=list)
    block: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Parsed:
    statements: list[Statement]
    #: problems of the input that keepalived only warns about (an include matching nothing)
    notes: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass
class _Token:
    text: str
    quoted: bool
    file: str
    line: int


def parse_file(path: str, config_id: str, display_root: str | None = None) -> Parsed:
    """Parse ``path`` and everything it includes. ``display_root``: the directory file
    names in ``Statement.file`` are made relative to (default: the main file's)."""
    root = display_root if display_root is not None else os.path.dirname(os.path.abspath(path))
    reader = _Reader(config_id, root)
    reader.read(path, 0)
    return Parsed(_build(reader.lines), reader.notes)


class _Reader:
    def __init__(self, config_id: str, root: str) -> None:
        self.config_id = config_id
        self.root = root
        self.variables: dict[str, str] = {}
        self.lines: list[list[_Token]] = []
        self.notes: list[tuple[str, int, str]] = []

    def _name(self, path: str) -> str:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        return path if rel.startswith("..") else rel

    def read(self, path: str, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise KeepalivedSyntaxError(
                f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep"
            )
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            raise KeepalivedSyntaxError(f"{path}: cannot read: {exc.strerror or exc}") from None
        name = self._name(path)
        base = os.path.dirname(os.path.abspath(path))
        for number, raw in enumerate(text.splitlines(), 1):
            line = self._conditional(raw.strip())
            if line is None:
                continue
            line = _strip_comment(line).strip()
            if not line:
                continue
            definition = _VAR_DEF.match(line)
            if definition:
                self.variables[definition.group(1)] = self._expand(definition.group(2).strip())
                continue
            line = self._expand(line)
            tokens = _tokens(line, name, number)
            if tokens and tokens[0].text == "include" and not tokens[0].quoted:
                if len(tokens) != 2:
                    raise KeepalivedSyntaxError(f"{name}:{number}: include takes one path")
                pattern = tokens[1].text
                if not os.path.isabs(pattern):
                    pattern = os.path.join(base, pattern)
                matches = sorted(glob.glob(pattern))
                if not matches:
                    self.notes.append((name, number, f"include {tokens[1].text}: no file matches"))
                for match in matches:
                    self.read(match, depth + 1)
                continue
            if tokens:
                self.lines.append(tokens)

    def _conditional(self, line: str) -> str | None:
        """``@id rest`` is kept only when the config id is ``id``; ``@^id rest`` when not."""
        if not line.startswith("@"):
            return line
        head, _, rest = line.partition(" ")
        head, _, tab_rest = head.partition("\t")
        rest = (tab_rest + " " + rest).strip() if tab_rest else rest
        negate = head.startswith("@^")
        ident = head[2:] if negate else head[1:]
        return rest if (ident == self.config_id) != negate else None

    def _expand(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            return self.variables.get(name, match.group(0))

        for _ in range(8):  # definitions may use other definitions
            expanded = _VAR_USE.sub(value, text)
            if expanded == text:
                break
            text = expanded
        return text


def _strip_comment(line: str) -> str:
    """Drop from the first ``#`` or ``!`` outside double quotes."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c in "#!" and not quoted:
            return line[:i]
    return line


def _tokens(line: str, file: str, number: int) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c in "{}":
            out.append(_Token(c, False, file, number))
            i += 1
        elif c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise KeepalivedSyntaxError(f"{file}:{number}: unterminated quoted string")
            out.append(_Token(line[i + 1 : end], True, file, number))
            i = end + 1
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] not in '{}"':
                j += 1
            out.append(_Token(line[i:j], False, file, number))
            i = j
    return out


def _build(lines: list[list[_Token]]) -> list[Statement]:
    top: list[Statement] = []
    stack: list[tuple[list[Statement], Statement | None]] = [(top, None)]
    for tokens in lines:
        current: Statement | None = None
        for token in tokens:
            siblings = stack[-1][0]
            if token.text == "{" and not token.quoted:
                owner = current or (siblings[-1] if siblings else None)
                if owner is None:
                    raise KeepalivedSyntaxError(
                        f"{token.file}:{token.line}: '{{' without a keyword"
                    )
                owner.block = True
                stack.append((owner.children, owner))
                current = None
            elif token.text == "}" and not token.quoted:
                if len(stack) == 1:
                    raise KeepalivedSyntaxError(f"{token.file}:{token.line}: '}}' without '{{'")
                stack.pop()
                current = None
            elif current is None:
                current = Statement(token.text, [], token.file, token.line)
                siblings.append(current)
            else:
                current.args.append(token.text)
    if len(stack) > 1:
        owner = stack[-1][1]
        assert owner is not None
        raise KeepalivedSyntaxError(f"{owner.where}: '{owner.keyword} {{' is never closed")
    return top
