"""finalize stage: remux to MP4 (faststart) and write the rec.json sidecar."""
