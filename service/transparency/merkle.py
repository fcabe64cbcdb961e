"""The RFC 9162 (RFC 6962) Merkle tree: hashes, proofs and their verification, with no storage.

A tree of n leaves is named by its leaves' hashes; every hash a proof needs is the hash of a range
of leaves [lo, hi). Proofs are built here as lists of ranges (`inclusion_ranges`,
`consistency_ranges`), and a store turns each range into its hash (`range_hash`) from the hashes of
the perfect subtrees it keeps. Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 exactly, and is
tested against transparency-dev/merkle's test vectors (tests/transparency/data/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]  # leaves [lo, hi)
# The hash of the perfect subtree at (level, index): leaves [index·2^level, (index+1)·2^level).
NodeLookup = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify; the message says why."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) straight from the definition (for small trees and tests)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = _split(len(leaf_hashes))
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def range_hash(lo: int, hi: int, node: NodeLookup) -> bytes:
    """MTH(D[lo:hi]) for a range that is a subtree of some tree: lo is a multiple of the largest
    power of two below hi - lo, so the left part of every split is a perfect subtree."""
    n = hi - lo
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:  # perfect
        level = n.bit_length() - 1
        return node(level, lo >> level)
    k = _split(n)
    return node_hash(range_hash(lo, lo + k, node), range_hash(lo + k, hi, node))


def perfect_nodes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The (level, index) of the perfect subtrees `range_hash(lo, hi, ...)` reads."""
    out: list[tuple[int, int]] = []
    while hi > lo:
        n = hi - lo
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            out.append((level, lo >> level))
            break
        k = _split(n)
        out.append(((k.bit_length() - 1), lo >> (k.bit_length() - 1)))
        lo += k
    return out


def new_nodes(index: int, leaf: bytes, node: NodeLookup) -> list[tuple[int, int, bytes]]:
    """The perfect subtrees that leaf `index` completes, as (level, index, hash), the leaf first."""
    out = [(0, index, leaf)]
    level, i, h = 0, index, leaf
    while i & 1:  # a right child: its left sibling is complete, so is their parent
        h = node_hash(node(level, i - 1), h)
        level, i = level + 1, i >> 1
        out.append((level, i, h))
    return out


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, as the leaf ranges whose hashes it lists."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[Range] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo, m = lo + k, m - k
    return path[::-1]  # the leaf's sibling first


def consistency_ranges(old: int, new: int) -> list[Range]:
    """PROOF(old, D[new]) of RFC 9162 §2.1.4.1 (SUBPROOF with b = true), as leaf ranges."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    proof: list[Range] = []
    lo, hi, m, complete = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append((lo + k, hi))
            hi = lo + k
        else:
            proof.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append((lo, hi))
    return proof[::-1]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` makes for `leaf` at `index` (RFC 9162 §2.1.3.2, steps 1-4)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("a leaf or proof hash is not 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raises ProofError unless `leaf` is at `index` of the tree of `size` with `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raises ProofError unless the tree of `new` with `new_root` extends the one of `old` with
    `old_root` (RFC 9162 §2.1.4.2). As transparency-dev/merkle: a proof from the empty tree is
    meaningless, and equal sizes need an empty proof and equal roots."""
    if new < old:
        raise ProofError(f"the new tree ({new}) is smaller than the old ({old})")
    if old == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("a proof hash is not 32 bytes")
    if old == new:
        if proof:
            raise ProofError("trees of one size need an empty proof")
        if old_root != new_root:
            raise ProofError("two trees of one size have different roots")
        return
    if not proof:
        raise ProofError("the proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node of the path
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError("the proof does not lead to the old root: the log's history was rewritten")
    if sr != new_root:
        raise ProofError("the proof does not lead to the new root")
