"""rlhfkit.label"""
