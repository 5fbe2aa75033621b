"""FaceGraph: face-analysis pipelines served as one Ray Serve deployment graph."""

__version__ = "0.1.0"
