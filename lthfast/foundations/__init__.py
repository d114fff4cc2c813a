"""Foundations every layer uses: errors, typed settings, atomic files, signals, the device, seed statistics."""
