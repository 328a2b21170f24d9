"""The pretrained record, its weight files and its transport to Dask."""
