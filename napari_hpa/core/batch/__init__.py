"""Batch prediction of whole folders: streaming, resumable, on one machine or a dask cluster."""
