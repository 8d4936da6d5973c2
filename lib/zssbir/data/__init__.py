"""Data: benchmark registry, SAKE-format file lists, the synthetic generator, Datasets and samplers."""
