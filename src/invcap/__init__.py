"""invcap: a reproducible study of "Image Generation from Image Captioning - Invertible Approach".

Modules (each readable top to bottom):

- ``invcap.inn``: the invertible network (LU linear layers, LeakyReLU, the MLP built from them).
- ``invcap.repro``: seeding, thread control, and the run record written beside every result.
- ``invcap.io``: atomic writes of JSON, CSV, tensors and figures; the project's folders.
"""

__version__ = "0.1.0"
