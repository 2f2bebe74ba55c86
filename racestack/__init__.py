"""racestack: real-time ROS 2 perception and planning for autonomous racing."""

__version__ = "0.1.0"
