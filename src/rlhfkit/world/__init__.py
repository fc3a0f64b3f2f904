"""rlhfkit.world"""
