"""RoadBuddy: multiple-choice traffic-video QA with InternVL3.5."""

__version__ = "0.1.0"
