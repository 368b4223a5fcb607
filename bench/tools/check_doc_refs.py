"""Check that the docs name what exists: ``python bench/tools/check_doc_refs.py`` (``make lint``).

Consumes: README.md and docs/*.md (their inline code, ```bash blocks and links), plus the
citations of a doc section in the repo's code and configs. Emits: one line per reference that
names nothing, ``FILE:LINE: what is wrong``, and exit status 1 if there is any.

What it checks, and what it leaves alone (it judges references, not prose):

* a file path (``cluster/components.py``, ``configs/cluster/*.yaml``, ``peers.{json,png}``)
  whose first folder is one of the repo's: it exists (braces and globs expanded). A bare
  ``name.py`` exists somewhere in the repo. Placeholders (``runs/<name>/``) and paths outside
  the repo's folders (``~/.ray``, ``runs/``) are not references.
* ``path::name`` (``cluster/components.py::connect_components``, ``a.py::Class.method``): the
  file defines ``name`` at top level or in a class (read with ``ast``, not imported); so does
  a dotted name of the repo's code (``cluster.config.OniConfig``).
* a config key (``rollout.envs_per_actor``, ``learner.lr=2e-4``, ``rewards.judge.*``): a dotted
  name starting with a section of :class:`cluster.config.OniConfig` is a key of the schema. A
  name relative to a nested section (``vllm.num_gpus``) is a key of some section of that
  name. A dotted name that is Python (``ray.get``) is not a key.
* a link (``[x](docs/operations.md#live-metrics)``): the file exists, and the anchor is one
  of its headings' GitHub anchors. In code and configs, ``docs/x.md#anchor`` and
  ``README, "Section"`` citations name a file and a heading that exist.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import importlib
import re
import subprocess
import sys
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the packages are the checkout's
    sys.path.insert(0, str(REPO))

CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*(\S*)")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED = re.compile(rf"{IDENT}(?:\.(?:{IDENT}|\*))+")
QUALIFIED = re.compile(rf"(\S+?\.py)::({IDENT}(?:\.{IDENT})*)")
# Citations of a doc from code and configs: docs/x.md#anchor, README.md#anchor,
# README, "Heading" or docs/x.md, "Heading".
CITED_ANCHOR = re.compile(r"((?:docs/[\w.-]+|README)\.md)#([\w-]+)")
CITED_HEADING = re.compile(r"((?:docs/[\w.-]+\.md)|README(?:\.md)?),? \"([^\"]+)\"")
# Suffixes that make a bare word a file name (outputs such as report.md or summary.json are
# not the repo's files, so only source files are checked by name alone).
SOURCE_SUFFIXES = (".py", ".sh")
# The last part of a dotted word that makes it a file name (``metrics.parquet``), not a key.
FILE_SUFFIXES = frozenset({"py", "sh", "md", "json", "yaml", "yml", "toml", "png", "parquet",
                           "csv", "txt", "pt", "log", "html"})
# In a command, the word after these names a module or an output, not a file of the repo.
NOT_A_REFERENCE_AFTER = frozenset({"-m", "--out", "-o"})
CITING_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".sh", ".cfg")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


# ---- what exists ----------------------------------------------------------------------
@functools.cache
def tracked_files(root: Path) -> frozenset[str]:
    """The repo's files (git's view, so build outputs and caches are not the repo's)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
        return frozenset(out.split())
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
        return frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@functools.cache
def top_folders(root: Path) -> frozenset[str]:
    return frozenset(f.split("/", 1)[0] for f in tracked_files(root) if "/" in f)


@functools.cache
def basenames(root: Path) -> frozenset[str]:
    return frozenset(f.rsplit("/", 1)[-1] for f in tracked_files(root))


def expand_braces(text: str) -> list[str]:
    """``a.{json,png}`` -> ``a.json``, ``a.png`` (nested braces too)."""
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [out for alt in m.group(1).split(",")
            for out in expand_braces(text[:m.start()] + alt + text[m.end():])]


def path_exists(root: Path, path: str) -> bool:
    """A file or folder of the repo (globs allowed), relative to the repo root."""
    files = tracked_files(root)
    path = path.rstrip("/")
    for candidate in expand_braces(path):
        if any(ch in candidate for ch in "*?["):
            if any(fnmatch.fnmatchcase(f, candidate) or fnmatch.fnmatchcase(f, candidate + "/*")
                   for f in files):
                return True
        elif candidate in files or any(f.startswith(candidate + "/") for f in files):
            continue
        else:
            return False
    return not any(ch in path for ch in "*?[")


@functools.cache
def defined_names(file: Path) -> frozenset[str]:
    """Top-level names and ``Class.member`` names of a Python file."""
    tree = ast.parse(file.read_text(), str(file))
    names: set[str] = set()

    def targets(node: ast.stmt) -> Iterator[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                yield from (n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            yield node.target.id

    for node in tree.body:
        names.update(targets(node))
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                names.update(f"{node.name}.{n}" for n in targets(member))
    return frozenset(names)


def _is_dict(tp: object) -> bool:
    return typing.get_origin(tp) is dict or tp is dict


@functools.cache
def config_keys() -> tuple[frozenset[str], frozenset[str]]:
    """Every key of the schema (sections included), and the keys whose values are free-form
    mappings (``rollout.resources``: anything below them is the user's)."""
    from cluster.config import OniConfig

    keys: set[str] = set()
    mappings: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            keys.add(key)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
            elif _is_dict(hints[f.name]):
                mappings.add(key)

    walk(OniConfig, "")
    return frozenset(keys), frozenset(mappings)


def is_config_key(name: str) -> bool:
    keys, mappings = config_keys()
    if name.endswith(".*"):
        return name[:-2] in keys
    return name in keys or any(name.startswith(m + ".") for m in mappings)


def looks_like_key(name: str) -> bool:
    """Starts with a section of the schema, at the top (``learner.lr``) or nested
    (``vllm.num_gpus``, relative to ``rewards.judge``)."""
    keys, _ = config_keys()
    first = name.split(".", 1)[0]
    return any(k == first or k.endswith("." + first) for k in keys if _is_section(k))


@functools.cache
def _is_section(key: str) -> bool:
    keys, _ = config_keys()
    return any(k.startswith(key + ".") for k in keys)


def resolves_relative(name: str) -> bool:
    """``vllm.num_gpus``: a key below some section named ``vllm``."""
    keys, mappings = config_keys()
    return any(k.endswith("." + name) for k in keys) or any(
        (m + ".").endswith("." + name.rsplit(".", 1)[0] + ".") for m in mappings
    ) or (name.endswith(".*") and any(k.endswith("." + name[:-2]) for k in keys))


@functools.cache
def is_python(name: str) -> bool:
    """``ray.get``, ``ray.util.state``: a module's attribute, not a config key."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # not a module (or not importable here): try a shorter prefix
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@functools.cache
def heading_anchors(file: Path) -> frozenset[str]:
    """GitHub's anchors of a markdown file's headings (``-1``, ``-2`` for repeats)."""
    seen: dict[str, int] = {}
    in_fence = False
    for line in file.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            seen[f"{slug}-{n}"] = 1
    anchors = set(seen)
    anchors.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", file.read_text()))
    return frozenset(anchors)


@functools.cache
def headings(file: Path) -> frozenset[str]:
    return frozenset(m.group(1).strip() for m in re.finditer(
        r"^#{1,6}\s+(.*?)\s*#*\s*$", file.read_text(), re.M))


# ---- checking one reference ---------------------------------------------------------------
def check_token(root: Path, token: str) -> str | None:
    """What is wrong with one word of inline code, or None (fine, or not a reference)."""
    if re.search(r"\w\(", token):
        return None  # a call (`wandb.init()`, `ray.init(...)`): code, not a key or a path
    token = token.strip("()[],;:'\"").rstrip(".")
    if not token or "<" in token or "://" in token or token.startswith(("~", "/", "-", "$")):
        return None
    qualified = QUALIFIED.fullmatch(token)
    if qualified:
        path, name = qualified.groups()
        if not path_exists(root, path):
            return f"{token}: no file {path}"
        if name not in defined_names(root / path) and not any(
            n.endswith("." + name) for n in defined_names(root / path)
        ):
            return f"{token}: {path} defines no {name} (top level or in a class)"
        return None
    key = token.split("=", 1)[0]
    if "/" in key:
        first = key.split("/", 1)[0]
        if first in top_folders(root) and not path_exists(root, key):
            return f"{key}: no such file or folder"
        return None
    if key.endswith(SOURCE_SUFFIXES) and re.fullmatch(r"[\w.-]+", key):
        if key not in basenames(root):
            return f"{key}: no file of that name in the repo"
        return None
    if key.rsplit(".", 1)[-1] in FILE_SUFFIXES:
        return None  # an output's name (metrics.parquet, summary.json)
    if not DOTTED.fullmatch(key):
        return None
    if looks_like_key(key):
        top = key.split(".", 1)[0] in {k for k in config_keys()[0] if "." not in k}
        if (is_config_key(key) if top else resolves_relative(key)) or names_repo_code(
            root, key
        ) or is_python(key):
            return None
        return f"{key}: not a config key (cluster.config.OniConfig; `oniray config` lists them)"
    if key.split(".", 1)[0] in repo_packages(root) and not names_repo_code(root, key):
        return f"{key}: no such module, or a name it does not define"
    return None


@functools.cache
def repo_packages(root: Path) -> frozenset[str]:
    """The repo's top-level Python packages (``cluster``, ``actors``, ...)."""
    return frozenset(f.split("/", 1)[0] for f in tracked_files(root)
                     if f.count("/") == 1 and f.endswith("/__init__.py"))


def names_repo_code(root: Path, name: str) -> bool:
    """``cluster.config.OniConfig``, ``rewards.label_store``: a module of the repo, and a name
    it defines (read with ``ast``, not imported)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:cut])
        rest = ".".join(parts[cut:])
        if base.with_suffix(".py").is_file():
            return not rest or rest in defined_names(base.with_suffix(".py"))
        if (base / "__init__.py").is_file():
            return not rest or rest in defined_names(base / "__init__.py")
    return False


def check_link(root: Path, doc: Path, target: str) -> str | None:
    if re.match(r"[a-z]+:", target):  # http(s), mailto
        return None
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    if not file.exists():
        return f"link {target}: no file {path}"
    if anchor and file.suffix == ".md" and anchor not in heading_anchors(file):
        return f"link {target}: {_name(root, file)} has no heading #{anchor}"
    return None


def code_words(line: str, *, in_bash: bool) -> Iterator[str]:
    spans = [line] if in_bash else [m.group(2) for m in CODE_SPAN.finditer(line)]
    for span in spans:
        words = span.split()
        for before, word in zip(["", *words[:-1]], words, strict=True):
            if before not in NOT_A_REFERENCE_AFTER:
                yield word


def _name(root: Path, file: Path) -> str:
    return str(file.relative_to(root)) if file.is_relative_to(root) else str(file)


def check_markdown(root: Path, doc: Path) -> list[Problem]:
    rel = _name(root, doc)
    problems: list[Problem] = []
    fence: str | None = None
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m:
            fence = None if fence is not None else m.group(2) or "text"
            continue
        if fence is not None and fence not in ("bash", "sh", "shell"):
            continue  # program output, diagrams: not references
        for word in code_words(line, in_bash=fence is not None):
            what = check_token(root, word)
            if what:
                problems.append(Problem(rel, number, what))
        if fence is None:
            for target in LINK.findall(CODE_SPAN.sub("", line)):
                what = check_link(root, doc, target)
                if what:
                    problems.append(Problem(rel, number, what))
    return problems


def check_citations(root: Path, file: Path) -> list[Problem]:
    """``docs/scaling.md#anchor`` and ``README, "Heading"`` in code and configs."""
    rel = _name(root, file)
    problems: list[Problem] = []
    for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
        for doc, anchor in CITED_ANCHOR.findall(line):
            what = check_link(root, root / "README.md", f"{doc}#{anchor}")
            if what:
                problems.append(Problem(rel, number, what))
        for doc, heading in CITED_HEADING.findall(line):
            md = root / (doc if doc.endswith(".md") else doc + ".md")
            if not md.exists():
                problems.append(Problem(rel, number, f"cites {doc}, which does not exist"))
            elif heading not in headings(md):
                problems.append(Problem(rel, number, f'cites {doc}, "{heading}": no such heading'))
    return problems


def check(root: Path = REPO, docs: Iterable[Path] | None = None) -> list[Problem]:
    """Every problem in ``docs`` (default README.md and docs/*.md) and in the repo's
    citations of them."""
    if docs is None:
        docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        this = Path(__file__).resolve()  # its docstring's examples are not citations
        citing = [root / f for f in sorted(tracked_files(root))
                  if (f.endswith(CITING_SUFFIXES) or f == "Makefile") and root / f != this]
    else:
        citing = []
    problems = [p for doc in docs for p in check_markdown(root, doc)]
    problems += [p for f in citing if f.is_file() for p in check_citations(root, f)]
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} reference(s) in the docs name nothing "
              f"(bench/tools/check_doc_refs.py)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
