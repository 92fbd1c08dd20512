"""capture stage of the recorder pipeline."""
