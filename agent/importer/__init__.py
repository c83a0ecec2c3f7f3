"""Import a keepalived.conf: ``lvs-agent import-keepalived``.

Owns reading keepalived's file format (``parser``), mapping its keywords onto this
agent's configuration (``translate``, pure) and writing the result as commented
YAML (``yamlout``). Never validates the result itself (``check-config`` does) and
never touches the host beyond reading the files named.

Public surface: ``import_keepalived(path, config_id) -> Imported`` and
``KeepalivedSyntaxError``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from agent.importer.parser import KeepalivedSyntaxError, parse_file
from agent.importer.translate import Skipped, translate
from agent.importer.yamlout import dump


@dataclass(frozen=True)
class Imported:
    yaml: str
    skipped: tuple[Skipped, ...]
    #: the input's own warnings (an include that matches no file)
    notes: tuple[str, ...]


def default_config_id() -> str:
    """keepalived's default ``-i``: the host name up to the first dot."""
    return socket.gethostname().split(".")[0]


def import_keepalived(path: str, config_id: str | None = None) -> Imported:
    """Read ``path`` (and its includes) and translate it; raises KeepalivedSyntaxError."""
    cid = default_config_id() if config_id is None else config_id
    parsed = parse_file(path, cid)
    if not parsed.statements:
        raise KeepalivedSyntaxError(f"{path}: no keepalived configuration in it")
    result = translate(parsed.statements)
    header = [
        f"Imported from keepalived configuration {path} (config id {cid!r}) by",
        "lvs-agent import-keepalived. Each entry names the keepalived file:line it came from;",
        "what was not translated was listed on stderr. Check it with: lvs-agent check-config",
    ]
    notes = tuple(f"{f}:{n}: {text}" for f, n, text in parsed.notes)
    return Imported(dump(result.document, header), tuple(result.skipped), notes)


__all__ = ["Imported", "KeepalivedSyntaxError", "Skipped", "import_keepalived"]
