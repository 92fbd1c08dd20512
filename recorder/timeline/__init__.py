"""What happened during a recording, on the media clock (`contract.timeline`): collected while it runs,
built into timeline.json when it is finalized."""
