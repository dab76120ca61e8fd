"""Bottom layer: errors, configuration and its hash, the plain data types stages share."""
