"""finalize stage of the recorder pipeline."""
