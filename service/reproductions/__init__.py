"""Reproductions of released jobs: a re-run in a fresh sandbox, its raw result compared by HMAC."""
