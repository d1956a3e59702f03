"""The repository's files as the linters and rule tests see them."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path


def project_files(root: Path) -> list[str]:
    """Every file git tracks or would track (untracked but not ignored), sorted."""
    done = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, text=True, check=True,
    )
    return sorted(name for name in set(done.stdout.split("\0")) if name and (root / name).is_file())


def interpreter(path: Path) -> str | None:
    """The program a #! line names (`env NAME` resolved to NAME), or None without one."""
    try:
        with open(path, "rb") as file:
            first = file.readline(200).decode("utf-8", errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = shlex.split(first[2:])
    if not words:
        return None
    program = Path(words[0]).name
    if program == "env":
        rest = [word for word in words[1:] if not word.startswith("-")]
        return rest[0] if rest else None
    return program


def is_shell_script(root: Path, name: str) -> bool:
    return name.endswith(".sh") or interpreter(root / name) in ("sh", "bash")


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script as word lists, including those inside $( ... ).

    Words come from shlex (the shell's quoting rules); commands are split at newlines (outside
    quotes and continuations), `;`, `&&`, `||`, `|` and `&`; leading `NAME=value` words are dropped.
    """
    commands: list[list[str]] = []
    current: list[str] = []
    for token in _tokens(script):
        if token in ("\n", ";", "&&", "||", "|", "&", "(", ")", ";;"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    commands = [_without_assignments(words) for words in commands]
    for words in list(commands):
        for word in words:
            for inner in _substitutions(word):
                commands.extend(shell_commands(inner))
    return commands


def _without_assignments(words: list[str]) -> list[str]:
    """The command without the `NAME=value` words before it (they only set its environment)."""
    while len(words) > 1:
        name, equals, _ = words[0].partition("=")
        if not (equals and name.isidentifier()):
            break
        words = words[1:]
    return words


def _tokens(script: str) -> list[str]:
    """shlex words, with each unquoted, unescaped newline as a token of its own."""
    tokens: list[str] = []
    for line in _logical_lines(script):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens.extend(lexer)
        tokens.append("\n")
    return tokens


def _logical_lines(script: str) -> list[str]:
    """Lines joined across backslash-newline and across newlines inside quotes."""
    lines: list[str] = []
    pending = ""
    continued = False
    for raw in script.splitlines():
        pending = (f"{pending} {raw}" if continued else f"{pending}\n{raw}") if pending else raw
        continued = pending.endswith("\\")
        if continued:
            pending = pending[:-1]
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        lines.append(pending)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _substitutions(word: str) -> list[str]:
    """The scripts inside every $( ... ) of a word (nested parentheses balanced)."""
    found = []
    start = word.find("$(")
    while start != -1:
        depth, index = 0, start + 1
        while index < len(word):
            if word[index] == "(":
                depth += 1
            elif word[index] == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        found.append(word[start + 2 : index])
        start = word.find("$(", index)
    return found
