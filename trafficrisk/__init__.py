"""trafficrisk: real-time traffic-risk analytics for camera networks."""

__version__ = "0.1.0"
