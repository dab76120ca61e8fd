"""The dataset contract: columns, Arrow schema, record type, layout, writer, stats, reader."""
