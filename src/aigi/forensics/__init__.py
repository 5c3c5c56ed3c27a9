"""What a file says about itself, beside its pixels: provenance metadata and dataset audits.

:mod:`~aigi.forensics.evidence` reads a file's C2PA manifest, XMP source type, generation
parameters and camera EXIF from its bytes (never decoding a pixel), and
:mod:`~aigi.forensics.verdict` combines them with a pixel verdict. :mod:`~aigi.forensics.audit`
asks whether such file properties alone separate a dataset's real images from its fakes.
It stands on :mod:`aigi.io` only; the detector and everything above it may use it.
"""
