"""Roadwork classifier pipeline for NATIX StreetVision miners."""
