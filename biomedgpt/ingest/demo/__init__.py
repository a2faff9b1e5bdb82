"""The demo corpus: real data from package registries (`biomedgpt.ingest.registry`) as webdataset shards.

``biomedgpt shard --demo --out data_shards/demo`` runs `builder.build_demo`; one module per source
(`dicom_files`, `radiomics`, `nuclei`, `skimage_images`, `slide`, `iu_reports`, `pubmed`) turns
the real files of one registry package into samples, with templated text where no registry ships
any (questions, captions); `common` holds what they share and `card` renders the count tables of
the data card, ``data_shards/DEMO_DATA_CARD.md``.
"""
