"""Ingestion: everything that turns outside data into shards of `biomedgpt.data.schema.Sample`.

The JSONL manifest input (`manifest_input.py`), the dataset converters (`converters/`), the demo corpus
(`demo/`), DICOM reading and de-identification (`dicom.py`, `deid.py`), volumes (`volumes.py`), image files
(`imageio.py`), the dataset registry (`registry.py`) and synthetic data (`synthetic.py`). It sits above the core
`biomedgpt.data` (schema, shards, pipeline), which it writes through, and below train, eval, serve and the commands
(docs/ARCHITECTURE.md, "Layers").
"""
