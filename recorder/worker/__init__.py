"""worker stage of the recorder pipeline."""
