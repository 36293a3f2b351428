"""Image and video metrics, imported by training and pipeline alike (no import cycle between them)."""
