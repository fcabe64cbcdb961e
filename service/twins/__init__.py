"""Synthetic twins: each dataset version's twin and each model version's stand-in, for partners to develop against."""
