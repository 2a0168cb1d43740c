"""Images and their filters, with Pillow: pure functions, no grpc, no storage.

- ``filters``: the catalogue (``CATALOGUE``), ``FilterStep``, checking, sizes, applying.
- ``images``: ``probe`` untrusted bytes, ``decode`` to L/LA/RGB/RGBA, ``encode``.
- ``pipeline``: ``validate_pipeline`` before a task is accepted, ``run_pipeline`` in a worker.
- ``errors``: ``UnprocessableImage``, ``FilterFailed``, ``PipelineCancelled``.
"""
