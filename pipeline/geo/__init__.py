"""Sentinel-2 and grid facts: bands, chip grids, Z-order, radiometry, RGB stretch. No I/O."""
