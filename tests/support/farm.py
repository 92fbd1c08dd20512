"""Test fixtures: farm."""
