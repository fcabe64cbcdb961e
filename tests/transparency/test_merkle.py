"""The tree code against transparency-dev/merkle's RFC 6962 test vectors (data/merkle_vectors.json
names its source and commit), and proofs built here against the verifier for every small tree."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from service.transparency import merkle

VECTORS = json.loads((Path(__file__).parent / "data" / "merkle_vectors.json").read_text())
REFERENCE = [bytes.fromhex(h) for h in VECTORS["reference_tree"]["leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(h) for h in VECTORS["reference_tree"]["roots_hex"]]


def b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


def store(leaves: list[bytes]) -> merkle.NodeLookup:
    """Perfect subtree hashes, built leaf by leaf as the database store builds them."""
    nodes: dict[tuple[int, int], bytes] = {}
    for i, data in enumerate(leaves):
        for level, index, h in merkle.new_nodes(i, merkle.leaf_hash(data), lambda lv, ix: nodes[(lv, ix)]):
            nodes[(level, index)] = h
    return lambda level, index: nodes[(level, index)]


@pytest.mark.parametrize("name", sorted(VECTORS["inclusion"]))
def test_inclusion_vectors(name):
    v = VECTORS["inclusion"][name]

    def check() -> None:
        merkle.verify_inclusion(
            v["leafIdx"], v["treeSize"], base64.b64decode(v["leafHash"] or ""), b64(v["proof"]), b64([v["root"]])[0]
        )

    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("name", sorted(VECTORS["consistency"]))
def test_consistency_vectors(name):
    v = VECTORS["consistency"][name]

    def check() -> None:
        merkle.verify_consistency(
            v["size1"],
            v["size2"],
            base64.b64decode(v["root1"] or ""),
            base64.b64decode(v["root2"] or ""),
            b64(v["proof"]),
        )

    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


def test_roots_of_the_reference_tree():
    node = store(REFERENCE)
    for size, root in enumerate(ROOTS):
        assert merkle.root_of([merkle.leaf_hash(d) for d in REFERENCE[:size]]) == root
        assert merkle.range_hash(0, size, node) == root


def test_built_proofs_are_the_vectors_happy_paths():
    node = store(REFERENCE)
    for name, v in VECTORS["inclusion"].items():
        if name.endswith("/happy-path.json") and v["treeSize"] <= len(REFERENCE):
            built = [merkle.range_hash(lo, hi, node) for lo, hi in merkle.inclusion_ranges(v["leafIdx"], v["treeSize"])]
            assert built == b64(v["proof"]), name
    for name, v in VECTORS["consistency"].items():
        if name.endswith("/happy-path.json") and v["size2"] <= len(REFERENCE) and v["size1"] > 0:
            built = [merkle.range_hash(lo, hi, node) for lo, hi in merkle.consistency_ranges(v["size1"], v["size2"])]
            assert built == b64(v["proof"]), name


def test_every_proof_of_every_tree_up_to_40_leaves_verifies_and_a_wrong_one_does_not():
    leaves = [f"leaf {i}".encode() for i in range(40)]
    node = store(leaves)
    roots = [merkle.root_of([merkle.leaf_hash(d) for d in leaves[:n]]) for n in range(41)]
    for n in range(1, 41):
        assert merkle.range_hash(0, n, node) == roots[n]
        for i in range(n):
            proof = [merkle.range_hash(lo, hi, node) for lo, hi in merkle.inclusion_ranges(i, n)]
            merkle.verify_inclusion(i, n, merkle.leaf_hash(leaves[i]), proof, roots[n])
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(i, n, merkle.leaf_hash(b"other"), proof, roots[n])
        for m in range(1, n + 1):
            proof = [merkle.range_hash(lo, hi, node) for lo, hi in merkle.consistency_ranges(m, n)]
            merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if m < n:
                with pytest.raises(merkle.ProofError):
                    merkle.verify_consistency(m, n, merkle.leaf_hash(b"forked"), roots[n], proof)


def test_a_range_reads_only_the_perfect_subtrees_it_names():
    leaves = [bytes([i]) for i in range(37)]
    full = store(leaves)
    for lo, hi in [(0, 37), (32, 37), (16, 21), (0, 1), (36, 37), (0, 32)]:
        wanted = set(merkle.perfect_nodes(lo, hi))

        def only(level: int, index: int, wanted: set = wanted) -> bytes:
            assert (level, index) in wanted
            return full(level, index)

        assert merkle.range_hash(lo, hi, only) == merkle.root_of([merkle.leaf_hash(d) for d in leaves[lo:hi]])
