"""Test fixtures: media."""
