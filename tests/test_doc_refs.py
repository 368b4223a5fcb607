"""The docs' reference check (``bench/tools/check_doc_refs.py``, run by ``make lint``): it finds
a planted bad reference of each kind, lets the good ones and the non-references pass, and the
repo's README and docs/ pass it today."""

from __future__ import annotations

from pathlib import Path

from bench.tools.check_doc_refs import REPO, check, check_citations

GOOD = """\
# Page

## Present heading: `--local`

Wired in `cluster/components.py::connect_components` (`actors/model.py::PolicyNet.forward`),
keys `rollout.envs_per_actor`, `learner.lr=2e-4`, `rewards.judge.*`, `vllm.num_gpus`,
`rollout.resources.rollout_node`, code `cluster.config.OniConfig`, `rewards.label_store`,
files `configs/cluster/*.yaml`,
`bench/results/peers.{json,png}`, `fragment.py`, a folder `k8s/`. Not references: `runs/<name>/`,
`~/.ray/auth_token`, `metrics.parquet`, `ray.get`, `torch.set_num_threads`, `oniray/Corridor-v0`,
`vllm.generate(prompts)`.
[here](#present-heading---local), [other](other.md#present), [README](other.md).

```bash
oniray train configs/default.yaml learner.lr=2e-4 run.max_minutes=30
python -m vllm.entrypoints.openai.api_server --out bench/results/not-yet-written
```

```
output is not checked: cluster/gone.py learner.nope
```
"""

BAD = {
    "`cluster/gone.py`": "cluster/gone.py: no such file",
    "`configs/nowhere/*.yaml`": "configs/nowhere/*.yaml: no such file",
    "`gone_module.py`": "gone_module.py: no file of that name",
    "`cluster/driver.py::build_components`": "cluster/driver.py defines no build_components",
    "`actors/model.py::PolicyNet.fly`": "actors/model.py defines no PolicyNet.fly",
    "`learner.lrr`": "learner.lrr: not a config key",
    "`rollout.envs_per_actor.x=3`": "rollout.envs_per_actor.x: not a config key",
    "`vllm.num_gpuz`": "vllm.num_gpuz: not a config key",
    "`cluster.config.OniConfigs`": "cluster.config.OniConfigs: no such module, or a name",
    "`cluster.nowhere`": "cluster.nowhere: no such module",
    "[gone](gone.md)": "link gone.md: no file gone.md",
    "[anchor](other.md#absent)": "link other.md#absent: ",
}


def _page(tmp_path: Path, text: str) -> Path:
    (tmp_path / "other.md").write_text("# Other\n\n## Present\n")
    page = tmp_path / "page.md"
    page.write_text(text)
    return page


def test_good_references_and_non_references_pass(tmp_path: Path) -> None:
    assert check(REPO, [_page(tmp_path, GOOD)]) == []


def test_each_kind_of_bad_reference_is_caught_with_its_line(tmp_path: Path) -> None:
    bad = list(BAD)
    page = _page(tmp_path, GOOD + "\n".join(bad) + "\n")
    problems = check(REPO, [page])
    first_bad_line = GOOD.count("\n") + 1
    assert len(problems) == len(bad), "\n".join(map(str, problems))
    for i, (p, expected) in enumerate(zip(problems, BAD.values(), strict=True)):
        assert p.line == first_bad_line + i
        assert expected in p.what, p


def test_a_bash_block_is_checked(tmp_path: Path) -> None:
    page = _page(tmp_path, "```bash\noniray train configs/gone.yaml learner.lrr=1\n```\n")
    assert [p.what.split(":")[0] for p in check(REPO, [page])] == [
        "configs/gone.yaml", "learner.lrr"]


def test_citations_of_docs_in_code_are_checked(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    # Assembled here: written whole, these lines would be bad citations in this very file
    # (the check reads the repo's tests too).
    cite = '# docs/scaling.md#{}, {}, "{}", docs/{}.md, "X"\n'
    source.write_text(
        cite.format("before-and-after-issue-18", "README", "The default job", "results")
        .replace(', "X"', "")
        + cite.format("no-such-part", "README", "How it is built", "gone")
    )
    problems = check_citations(REPO, source)
    assert [p.line for p in problems] == [2, 2, 2]
    assert "has no heading #no-such-part" in problems[0].what
    assert '"How it is built": no such heading' in problems[1].what
    assert "docs/gone.md, which does not exist" in problems[2].what


def test_the_repos_docs_name_only_what_exists() -> None:
    problems = check()
    assert problems == [], "\n".join(map(str, problems))
