#!/usr/bin/env python3
"""check-doc-links.py - the README and docs/ link only inside the repository, and every link resolves.

    scripts/check-doc-links.py [FILE.md ...]     default: README.md, docs/*.md, stackstorm/**/*.md

For each Markdown file, outside code blocks and code spans:
  - a link or bare URL with a scheme (http:, https:, mailto:, ...) is an error: the docs name
    outside things ("Synapse's documentation on application services") instead of linking them,
    so they neither rot nor send readers away;
  - a relative link must name an existing file or directory, and its #anchor, if any, a heading
    of that Markdown file (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens);
  - an absolute path, or one leaving the repository, is an error.
URLs inside code (`ST2_MATRIX_HOMESERVER__URL=https://matrix.example.org`) are examples, not links.
Exit status 1 when anything is wrong, with one line per problem.
"""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]+)>")
BARE_URL = re.compile(r"\b(?:https?|ftp)://\S+")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text, blank_code_spans=True):
    """Yields (line number, line), skipping fenced code blocks; code spans blanked unless asked."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * len(marker.group(1))
                continue
            if stripped.startswith(fence):
                fence = None
                continue
        if fence is None:
            yield number, re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line) if blank_code_spans else line


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor a Markdown file's headings make (duplicates get -1, -2, ... as on GitHub)."""
    seen = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), blank_code_spans=False):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def check(path):
    problems = []
    where = path.relative_to(REPO) if REPO in path.parents else path
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        targets = [m.group(1) for m in LINK.finditer(line)]
        targets += [m.group(1) for m in AUTOLINK.finditer(line)]
        without_links = LINK.sub("", AUTOLINK.sub("", line))
        targets += [m.group(0) for m in BARE_URL.finditer(without_links)]
        for target in targets:
            if SCHEME.match(target):
                problems.append(f"{where}:{number}: links outside the repository: {target}")
                continue
            file_part, _, anchor = target.partition("#")
            if file_part.startswith("/"):
                problems.append(f"{where}:{number}: absolute path: {target}")
                continue
            resolved = (path.parent / file_part).resolve() if file_part else path
            if REPO not in resolved.parents and resolved != REPO:
                problems.append(f"{where}:{number}: leaves the repository: {target}")
                continue
            if not resolved.exists():
                problems.append(f"{where}:{number}: no such file: {target}")
                continue
            if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}:{number}: no heading for #{anchor} in {file_part or where}")
    return problems


def main(argv):
    if argv:
        files = [Path(a).resolve() for a in argv]
    else:
        files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        files += sorted((REPO / "stackstorm").rglob("*.md"))
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} files checked, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
