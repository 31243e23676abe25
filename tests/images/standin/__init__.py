"""Programs that run inside the test images (not imported by the build)."""
