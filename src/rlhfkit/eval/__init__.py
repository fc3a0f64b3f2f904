"""Evaluation: gold reward, win rates with bootstrap intervals, KL, best-of-n, reports."""
