"""3D multi-object tracking: 3DMOTFormer and the Kalman/greedy baselines behind one Tracker interface."""
