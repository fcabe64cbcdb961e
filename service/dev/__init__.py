"""`evalgate dev`: a partner develops a suite on its own machine, against a synthetic twin and a stand-in model."""
