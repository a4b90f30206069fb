"""Launchers: absl apps that wire configs to the lopt and agents libraries."""
