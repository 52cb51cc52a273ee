"""The bare research repo: root commit, CAS on refs, 3-way merge of train.py, bundles, cat-file reads."""
from __future__ import annotations

import pytest

from agents.edits import line_delta
from coordinator.state.repo import RepoError, ResearchRepo, git_merge_texts, merge_texts

BASE = "A = 0\n# f\n# f\n# f\nB = 0\n# f\n# f\n# f\nPAD = 0\n"


def blob_id(repo: ResearchRepo, commit: str) -> str | None:
    return repo.commit_files([commit])[0][1]


def test_create_merge_cas_bundle(tmp_path):
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASE)
    assert repo.create("ignored") == root  # idempotent
    assert repo.show(root) == BASE and repo.parents(root) == []
    a = repo.commit_tree(BASE.replace("A = 0", "A = 1"), [root], "A", base=root)
    b = repo.commit_tree(BASE.replace("B = 0", "B = 1"), [root], "B", base=root)
    a2 = repo.commit_tree(BASE.replace("A = 0", "A = 2"), [root], "A2", base=root)
    text, clean = merge_texts(repo.show(root), repo.show(a), repo.show(b))
    assert clean and "A = 1" in text and "B = 1" in text
    _, clean = merge_texts(repo.show(root), repo.show(a), repo.show(a2))
    assert not clean
    m = repo.commit_tree(text, [a, b], "merge", base=a)
    assert repo.parents(m) == [a, b] and repo.is_ancestor(b, m) and not repo.is_ancestor(m, a)
    assert repo.first_parent_history(m) == [m, a, root]

    assert repo.update_ref("refs/heads/best/x", root, None)
    assert not repo.update_ref("refs/heads/best/x", root, None)   # exists already
    assert not repo.update_ref("refs/heads/best/x", m, a)         # not at a: refused
    assert repo.update_ref("refs/heads/best/x", a, root) and repo.ref("refs/heads/best/x") == a

    assert line_delta(repo.show(root), repo.show(a)) == (1, 1)
    assert line_delta(BASE, repo.show(repo.commit_tree(BASE.replace("PAD = 0\n", ""), [root], "s"))) == (0, 1)
    assert blob_id(repo, a) != blob_id(repo, root)
    assert blob_id(repo, repo.commit_tree(BASE, [a], "revert")) == blob_id(repo, root)
    assert repo.has_commit(m) and not repo.has_commit("ab" * 20) and not repo.has_commit(blob_id(repo, a))
    with pytest.raises(RepoError):
        repo.show("ab" * 20)

    repo.write_loose_ref("refs/experiments/e-1", a)
    assert repo.ref("refs/experiments/e-1") == a
    for bad in ("refs/experiments/../x", "refs/heads/best/x", "refs/experiments/a b", "refs/experiments/x.lock"):
        with pytest.raises(RepoError):
            repo.write_loose_ref(bad, a)

    other = ResearchRepo(tmp_path / "other.git")
    other.create("different\n")
    other.fetch_bundle(repo.bundle(m))
    assert other.has_commit(m) and other.show(m) == text
    with pytest.raises(RepoError):
        other.fetch_bundle(b"not a bundle")


def test_objects_written_in_process_are_git_valid(tmp_path):
    """commit_tree writes blob, tree and commit objects itself (no fork): git must read them back,
    fsck must find nothing wrong, and a base tree's other entries (files, a directory) survive."""
    import subprocess

    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASE)
    git = lambda *a, **k: subprocess.run(["git", "--git-dir", str(repo.path), *a], check=True,  # noqa: E731
                                         capture_output=True, **k).stdout
    # A base commit made by git itself, with entries that sort around train.py and a subtree.
    blob = lambda text: git("hash-object", "-w", "--stdin", input=text.encode()).decode().strip()  # noqa: E731
    sub = git("mktree", input=f"100644 blob {blob('x')}\tinner.txt\n".encode()).decode().strip()
    tree = git("mktree", input=(f"100644 blob {blob(BASE)}\ttrain.py\n100644 blob {blob('r')}\tREADME\n"
                                f"040000 tree {sub}\ttrain\n100644 blob {blob('z')}\tzeta.py\n").encode()
               ).decode().strip()
    base = git("commit-tree", tree, "-p", root, "-m", "base with more files").decode().strip()

    new_text = BASE.replace("A = 0", "A = 3") + "ünïcode = 'ok'\n"
    c = repo.commit_tree(new_text, [base, root], "a two-parent commit\n\nwith a body", base=base)
    assert git("fsck", "--strict", "--no-dangling").decode() == ""
    assert repo.show(c) == new_text and repo.parents(c) == [base, root]
    names = git("ls-tree", "--name-only", c).decode().split()
    assert names == ["README", "train.py", "train", "zeta.py"]  # git's order: "train/" sorts after "train.py"
    assert git("rev-parse", f"{c}:train/inner.txt") == git("rev-parse", f"{base}:train/inner.txt")
    # The same bytes as git's own hash-object: identical content gives identical blob ids.
    assert blob_id(repo, c) == git("hash-object", "--stdin", input=new_text.encode()).decode().strip()
    assert git("log", "-1", "--format=%an <%ae>%n%B", c).decode().startswith(
        "swarm-coordinator <coordinator@swarm.local>\na two-parent commit\n\nwith a body")


def test_cat_file_reads_several_specs_in_one_round_trip(tmp_path):
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASE)
    got = repo._cat.read_many([root, f"{root}:train.py", "ab" * 20, "bad\nspec", "", f"{root}:nope"])
    assert got[0][1] == "commit" and got[1][1] == "blob" and got[1][2] == BASE.encode()
    assert got[2:] == [None, None, None, None]
    [(is_commit, _, data)] = repo.commit_files([root])
    assert is_commit and data == BASE.encode()
    assert repo.commit_files(["ab" * 20, blob_id(repo, root)]) == [(False, None, None)] * 2  # a blob is not a commit


def _random_edit(rng, lines: list[str], n: int) -> list[str]:
    """`lines` with n random edits: a line replaced, deleted, or a (often repeated) line inserted."""
    t = lines[:]
    for _ in range(n):
        k = rng.randrange(len(t))
        op = rng.random()
        if op < 0.5:
            t[k] = f"Y{rng.randrange(9)} = {rng.random():.2f}\n"
        elif op < 0.75:
            del t[k]
        else:
            t.insert(k, rng.choice(["\n", "# filler\n", f"Z = {rng.randrange(3)}\n"]))
    return t


@pytest.fixture
def git_calls(monkeypatch):
    """The calls merge_texts makes to git merge-file (which still runs): empty when it merged in process."""
    from coordinator.state import repo as repo_mod

    calls = []
    real_git = repo_mod.git_merge_texts
    monkeypatch.setattr(repo_mod, "git_merge_texts", lambda *a: calls.append(a) or real_git(*a))
    return calls


def test_in_process_merge_agrees_with_git_merge_file():
    """merge_texts answers the common case itself; wherever it does, git merge-file must give
    the same text and also call it clean. Random edits of a train.py-like file, many seeds."""
    import random

    from coordinator.state.repo import _changed_span, git_merge_texts, merge_texts

    rng = random.Random(7)
    lines = [f"X{i} = {i}\n" for i in range(40)] + ["\n", "# filler\n"] * 10
    own = 0
    for case in range(250):
        base = lines[:]
        rng.shuffle(base)

        b = "".join(base)
        o = "".join(_random_edit(rng, base, rng.choice([1, 1, 2])))
        t = "".join(_random_edit(rng, base, rng.choice([1, 1, 2])))
        text, clean = merge_texts(b, o, t)
        gtext, gclean = git_merge_texts(b, o, t)
        spans = [_changed_span(base, x.splitlines(keepends=True)) for x in (o, t)]
        if None not in spans and o != t:
            (i1, j1, _), (i2, j2, _) = sorted(spans)
            if i2 - j1 >= 3:
                own += 1
                assert clean and gclean and text == gtext, case
        if not clean:
            assert (text, clean) == (gtext, gclean)
    assert own > 50  # the in-process path did answer a good share of the cases


def _agrees_with_git(calls: list, seed: int, edits, cases: int = 300) -> int:
    """`cases` random merges of a shuffled train.py-like file with repeated lines (the alignment's
    ambiguous case): `edits(rng, base)` gives the two sides' lines, each side on either hand.
    merge_texts must give git merge-file's text and verdict in every case; returns how many it
    answered in process (no call in `calls`, the git_calls fixture)."""
    import random

    rng = random.Random(seed)
    lines = [f"X{i} = {i}\n" for i in range(60)] + ["\n", "# filler\n", "# filler\n"] * 12
    answered = 0
    for case in range(cases):
        base = lines[:]
        rng.shuffle(base)
        b = "".join(base)
        o, t = ("".join(x) for x in edits(rng, base))
        if rng.random() < 0.5:
            o, t = t, o
        n = len(calls)
        text, clean = merge_texts(b, o, t)
        gtext, gclean = git_merge_texts(b, o, t)   # the real one, imported before the patch
        assert (text, clean) == (gtext, gclean), case
        answered += len(calls) == n
    return answered


def test_a_change_beside_a_best_that_moved_many_times_merges_in_process_as_git_does(git_calls):
    """Best has usually moved several times since a candidate's parent (many regions changed)
    and the candidate changed one: merge_texts splices it in itself when best left that region
    and MERGE_GAP lines round it as they were, and must give git merge-file's text and verdict."""
    spliced = _agrees_with_git(git_calls, 11, lambda rng, base: (
        _random_edit(rng, base, rng.randint(2, 6)), _random_edit(rng, base, 1)))
    # 230 of 300 here; 119 before the splice (only cases whose changed spans were far apart)
    assert spliced > 180


def test_a_change_best_already_made_merges_in_process_as_git_does(git_calls):
    """A candidate made on an earlier best often repeats a change best took since (two agents
    set the same knob; best has it): the merge is best as it is, clean. The coordinator bench's
    git merge-file forks were all of this kind (83 of 83, all clean). merge_texts answers it
    itself when best made the identical change with MERGE_GAP unchanged lines round it, and
    must give git merge-file's text and verdict."""
    def edits(rng, base):
        t = _random_edit(rng, base, 1)                       # the candidate's one change
        return _random_edit(rng, t, rng.randint(1, 5)), t   # best: that change and more

    answered = _agrees_with_git(git_calls, 5, edits)
    assert answered > 200, answered


def test_a_padded_train_py_never_costs_the_decision_lock_a_quadratic_alignment(git_calls):
    """2,000 identical lines (a padded file an LLM may return) cost difflib's alignment half a
    second; such a merge goes to git merge-file instead, with git's answer."""
    calls = git_calls
    base = ["X = 0\n"] + ["\n"] * 2000 + ["Y = 0\n"] + ["\n"] * 2000 + ["Z = 0\n"]
    ours = base[:]
    ours[0], ours[-1] = "X = 1\n", "Z = 1\n"     # best moved twice, at both ends
    theirs = base[:]
    theirs[2001] = "Y = 1\n"                     # the candidate's change, far from both
    b, o, t = ("".join(x) for x in (base, ours, theirs))
    assert merge_texts(b, o, t) == git_merge_texts(b, o, t)
    assert len(calls) == 1
    # a train.py-sized file still aligns in process
    small = [f"K{i} = 0\n# filler\n# filler\n" for i in range(200)]
    so, st = small[:], small[:]
    so[0], so[-1] = "K0 = 1\n# filler\n# filler\n", "K199 = 1\n# filler\n# filler\n"
    st[100] = "K100 = 2\n# filler\n# filler\n"
    calls.clear()
    text, clean = merge_texts("".join(small), "".join(so), "".join(st))
    assert clean and "K0 = 1" in text and "K199 = 1" in text and "K100 = 2" in text and not calls
