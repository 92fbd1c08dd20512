"""storage stage of the recorder pipeline."""
