"""`rig export`: a run's data out of the store as Battery Data Format CSV or Parquet, or as
CSV with a units row for Origin and Excel; one file per cell, a ``.metadata.json`` beside it.
Streams: memory stays bounded however long the run (``bdf.rows`` yields chunks)."""
