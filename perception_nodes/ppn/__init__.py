"""Parallel Perception Network: BEV segmentation and reconstruction from LiDAR, one process each."""
