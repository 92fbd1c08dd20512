"""Test fixtures: s3."""
