"""The bare research repo: root commit, CAS on refs, 3-way merge of train.py, bundles, cat-file reads."""
from __future__ import annotations

import pytest

from coordinator.repo import RepoError, ResearchRepo

BASE = "A = 0\n# f\n# f\n# f\nB = 0\n# f\n# f\n# f\nPAD = 0\n"


def test_create_merge_cas_bundle(tmp_path):
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASE)
    assert repo.create("ignored") == root  # idempotent
    assert repo.show(root) == BASE and repo.parents(root) == []
    a = repo.commit_tree(BASE.replace("A = 0", "A = 1"), [root], "A", base=root)
    b = repo.commit_tree(BASE.replace("B = 0", "B = 1"), [root], "B", base=root)
    a2 = repo.commit_tree(BASE.replace("A = 0", "A = 2"), [root], "A2", base=root)
    text, clean = repo.merge_file(root, a, b)
    assert clean and "A = 1" in text and "B = 1" in text
    _, clean = repo.merge_file(root, a, a2)
    assert not clean
    m = repo.commit_tree(text, [a, b], "merge", base=a)
    assert repo.parents(m) == [a, b] and repo.is_ancestor(b, m) and not repo.is_ancestor(m, a)
    assert repo.first_parent_history(m) == [m, a, root]

    assert repo.update_ref("refs/heads/best/x", root, None)
    assert not repo.update_ref("refs/heads/best/x", root, None)   # exists already
    assert not repo.update_ref("refs/heads/best/x", m, a)         # not at a: refused
    assert repo.update_ref("refs/heads/best/x", a, root) and repo.ref("refs/heads/best/x") == a

    assert repo.diff_lines(root, a) == (1, 1)
    assert repo.diff_lines(root, repo.commit_tree(BASE.replace("PAD = 0\n", ""), [root], "s")) == (0, 1)
    assert repo.blob_id(a) != repo.blob_id(root)
    assert repo.blob_id(repo.commit_tree(BASE, [a], "revert")) == repo.blob_id(root)
    assert repo.has_commit(m) and not repo.has_commit("ab" * 20) and not repo.has_commit(repo.blob_id(a))
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
