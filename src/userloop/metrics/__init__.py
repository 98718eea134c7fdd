"""Metrics of user simulators and user populations."""
