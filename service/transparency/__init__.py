"""The public transparency log of releases: an RFC 9162 Merkle tree with signed C2SP checkpoints,
and DSSE attestations of each release with their offline verification."""
