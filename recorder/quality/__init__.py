"""quality stage of the recorder pipeline."""
