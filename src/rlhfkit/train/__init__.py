"""rlhfkit.train"""
