"""Prices, estimates, budget guard and cost reports."""
