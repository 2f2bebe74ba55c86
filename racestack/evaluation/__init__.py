"""Evaluation of recorded runs: metrics from bags, running the stack on bags and in closed loop, reports."""
