"""rlhfkit: the InstructGPT RLHF loop (SFT -> reward model -> PPO) with its own labeling app."""

__version__ = "0.1.0"
