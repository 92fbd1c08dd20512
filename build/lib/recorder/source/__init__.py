"""source stage of the recorder pipeline."""
