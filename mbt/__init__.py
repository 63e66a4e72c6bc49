"""mbt package."""
