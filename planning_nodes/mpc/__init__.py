"""The learning-based MPC planner: model, DPP problem, SCP cycle, fallback, learning, node."""
