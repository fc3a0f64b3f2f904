"""Training loops, one per step of RLHF, each reading like the paper's algorithm."""
