"""The configuration as YAML, and back: ``python3 -m stktagg.yamlconf to-yaml|to-cfg FILE``.

Optional: needs ruamel.yaml (``pip install hapee-stktagg[yaml]`` or Debian's
python3-ruamel.yaml); the daemon never imports this module unless it is given
a ``.yaml``/``.yml`` file with ``-f``.

The YAML form keeps the file's sections, keywords and comments::

    # the aggregator of region A
    global:
      stats socket:
        - /run/hapee-stktagg/hapee-stktagg.sock mode 660
    aggregations:
      AGGR:
        peer:
          - A 192.0.2.11:10000      # node A
          - AGGR 192.0.2.50:10000 local
        from: .local to .aggr
        history:
          - .aggr to .yday stat avg window 1h offset 1d

Each line of a section becomes its keyword, mapping to the rest of the line
(``history-file: /var/lib/hapee-stktagg/history.db`` under ``global``); the
keywords a section may repeat (``peer``, ``stats socket``, ``log``,
``history``) map to a list, in file order. A keyword that takes no argument maps to ``true``.
A comment line goes with the line after it, an end-of-line comment with its
line. Both directions check that the result parses to the same
configuration (``config.strip_positions`` equality).
"""

from __future__ import annotations

import io
import sys

from .config import Config, Token, parse, quote_word, strip_positions, tokenize
from .errors import ConfigError

#: Keywords whose lines may repeat: a YAML list.
REPEATABLE = {"peer", "stats socket", "log", "history"}


def _ruamel():
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap, CommentedSeq
    except ImportError:  # pragma: no cover - depends on the machine
        raise ConfigError("YAML configuration needs ruamel.yaml (pip install ruamel.yaml)", "<yaml>", 1, 1) from None
    return YAML, CommentedMap, CommentedSeq


# -- the configuration's own text: lines and comments ------------------------------------------


def _comments_by_line(text: str) -> dict[int, str]:
    """Physical line number -> the text of its ``#`` comment (quotes and escapes respected)."""
    found = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        quote, i = None, 0
        while i < len(line):
            char = line[i]
            if char == "\\" and quote != "'":
                i += 2
                continue
            if quote:
                quote = None if char == quote else quote
            elif char in "\"'":
                quote = char
            elif char == "#":
                found[lineno] = line[i + 1 :].strip()
                break
            i += 1
    return found


def _key_and_value(words: list[Token]) -> tuple[str, str | bool]:
    if len(words) >= 2 and words[0].text == "stats" and words[1].text == "socket":
        key, rest = "stats socket", words[2:]
    else:
        key, rest = words[0].text, words[1:]
    return key, " ".join(quote_word(w.text) for w in rest) if rest else True


def cfg_to_yaml(text: str, path: str = "<string>") -> str:
    """A configuration file's text as YAML (comments kept).

    Raises:
        ConfigError: the file is not a valid configuration.
    """
    YAML, CommentedMap, CommentedSeq = _ruamel()
    config = parse(text, path)
    comments = _comments_by_line(text)
    lines = tokenize(text, path)
    used: set[int] = set()

    def before(lineno: int) -> list[str]:
        """The comment-only lines not yet placed, up to ``lineno``."""
        out = [comments[n] for n in sorted(comments) if n < lineno and n not in used]
        used.update(n for n in list(comments) if n < lineno)
        return out

    def eol(line) -> str | None:
        last = max(t.at.lineno for t in line)
        numbers = [n for n in range(line[0].at.lineno, last + 1) if n in comments and n not in used]
        used.update(numbers)
        return " ".join(comments[n] for n in numbers) or None

    root = CommentedMap()
    aggregations = None
    current = None
    for line in lines:
        head = line[0].text
        lead = before(line[0].at.lineno)
        if head == "global":
            current = root["global"] = CommentedMap()
            _attach(root, "global", lead, eol(line))
            continue
        if head == "aggregations":
            if aggregations is None:
                aggregations = root["aggregations"] = CommentedMap()
            name = line[1].text
            current = aggregations[name] = CommentedMap()
            _attach(aggregations, name, lead, eol(line))
            continue
        key, value = _key_and_value(list(line))
        note = eol(line)
        if key in REPEATABLE:
            seq = current.setdefault(key, CommentedSeq())
            seq.append(value)
            _attach(seq, len(seq) - 1, lead, note)
        else:
            current[key] = value
            _attach(current, key, lead, note)
    trailing = [comments[n] for n in sorted(comments) if n not in used]
    if trailing and root:
        root.yaml_set_comment_before_after_key(list(root)[-1], after="\n".join(trailing))
    out = io.StringIO()
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.dump(root, out)
    result = out.getvalue()
    _check_same(config, yaml_to_cfg(result, path), path)
    return result


def _attach(container, key, lead: list[str], note: str | None) -> None:
    # ruamel wants an item's end-of-line comment set before its leading ones.
    if note:
        container.yaml_add_eol_comment(note, key)
    if lead:
        container.yaml_set_comment_before_after_key(key, before="\n".join(lead), indent=_indent(container))


def _indent(container) -> int:
    # ruamel wants the column of the comment; nested sections are indented by 2 per level.
    return getattr(container, "_stktagg_indent", 0)


# -- YAML back to the configuration's text ---------------------------------------------------


def yaml_to_cfg(text: str, path: str = "<string>") -> str:
    """A YAML configuration as the configuration file's text (comments kept)."""
    cfg, _ = _yaml_to_cfg_lines(text, path)
    return "".join(line for line, _ in cfg)


def _yaml_to_cfg_lines(text: str, path: str) -> tuple[list[tuple[str, int]], object]:
    """(cfg line, YAML line number) pairs: errors found in the text map back to the YAML."""
    YAML, CommentedMap, CommentedSeq = _ruamel()
    try:
        data = YAML().load(text)
    except Exception as exc:  # ruamel's errors have no common base: report them all alike
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path,
                          (mark.line + 1) if mark else 1, (mark.column + 1) if mark else 1) from None
    if not isinstance(data, dict):
        raise ConfigError("a YAML configuration is a mapping of 'global' and 'aggregations'", path, 1, 1)
    out: list[tuple[str, int]] = []
    _start_comments(data, out)
    for section, body in data.items():
        line = _line_of(data, section)
        if section == "global":
            out.append(("global" + _eol(data, section) + "\n", line))
            out += _section_lines(body, path, line)
        elif section == "aggregations":
            if not isinstance(body, dict):
                raise ConfigError("'aggregations' maps section names to their lines", path, line, 1)
            out += _comments_after(data, section)
            for name, lines in body.items():
                out.append((f"aggregations {quote_word(str(name))}" + _eol(body, name) + "\n", _line_of(body, name)))
                out += _section_lines(lines, path, _line_of(body, name))
        else:
            raise ConfigError(f"unknown section '{section}' (expected global, aggregations)", path, line, 1)
    return out, data


def _section_lines(body, path: str, line: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if body is None:
        return out
    if not isinstance(body, dict):
        raise ConfigError("a section maps keywords to the rest of their lines", path, line, 1)
    # ruamel keeps the section line's own end-of-line comment as the start
    # comment of its body too: skip what stands on that line.
    out += [c for c in _comments_after_start(body) if c[1] != line]
    for key, value in body.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list):
            out += [c for c in _comments_after_start(value) if c[1] != _line_of(body, key)]
        for index, item in enumerate(values):
            where = _line_of(value, index) if isinstance(value, list) else _line_of(body, key)
            words = "" if item is True else f" {item}"
            note = _eol(value, index) if isinstance(value, list) else _eol(body, key)
            out.append((f"    {key}{words}{note}\n", where))
            out += _comments_after(value, index) if isinstance(value, list) else []
        if not isinstance(value, list):
            out += _comments_after(body, key)
    return out


def _comment_lines(tokens) -> list[tuple[str, int]]:
    """(comment text, its line) of ruamel comment tokens, flattened."""
    found = []
    for token in tokens or []:
        if token is None:
            continue
        if isinstance(token, list):
            found += _comment_lines(token)
            continue
        line = token.start_mark.line if getattr(token, "start_mark", None) else -1
        for offset, text in enumerate(token.value.splitlines()):
            if text.strip().startswith("#"):
                found.append((text.strip()[1:].strip(), line + offset))
    return found


def _tokens(container, key) -> list:
    ca = getattr(container, "ca", None)
    return list(ca.items.get(key, [])) if ca is not None else []


def _eol(container, key) -> str:
    """The end-of-line comment of an item, as ``  # text``."""
    line = _line_of(container, key) - 1
    same = [text for text, at in _comment_lines(_tokens(container, key)) if at == line]
    return f"  # {same[0]}" if same else ""


def _comments_after(container, key) -> list[tuple[str, int]]:
    """Comment lines ruamel attached after an item: they precede the next line."""
    line = _line_of(container, key) - 1
    return [(f"# {text}\n", at + 1) for text, at in _comment_lines(_tokens(container, key)) if at != line]


def _comments_after_start(container) -> list[tuple[str, int]]:
    ca = getattr(container, "ca", None)
    if ca is None or not ca.comment:
        return []
    return [(f"# {text}\n", at + 1) for text, at in _comment_lines(ca.comment)]


def _start_comments(data, out: list) -> None:
    out += _comments_after_start(data)


def _line_of(container, key) -> int:
    """1-based YAML line of a mapping key or list item (1 when unknown)."""
    lc = getattr(container, "lc", None)
    try:
        return (lc.key(key)[0] if isinstance(container, dict) else lc.item(key)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return 1


def load_yaml(path: str) -> Config:
    """Load a YAML configuration; errors point at the YAML file's line."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file: {exc.strerror or exc}", path, 1, 1) from None
    lines, _ = _yaml_to_cfg_lines(text, path)
    try:
        return parse("".join(line for line, _ in lines), path)
    except ConfigError as exc:
        yaml_line = lines[exc.lineno - 1][1] if 0 < exc.lineno <= len(lines) else 1
        raise ConfigError(exc.msg, path, yaml_line, 1) from None


def _check_same(config: Config, text: str, path: str) -> None:
    if strip_positions(parse(text, path)) != strip_positions(config):  # a bug of ours, not the user's
        raise ConfigError("the YAML form would not parse to the same configuration", path, 1, 1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("to-yaml", "to-cfg"):
        sys.stderr.write("usage: python3 -m stktagg.yamlconf to-yaml FILE.cfg | to-cfg FILE.yaml\n")
        return 2
    try:
        with open(args[1], encoding="utf-8") as handle:
            text = handle.read()
        if args[0] == "to-yaml":
            sys.stdout.write(cfg_to_yaml(text, args[1]))
        else:
            out = yaml_to_cfg(text, args[1])
            parse(out, args[1])
            sys.stdout.write(out)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
