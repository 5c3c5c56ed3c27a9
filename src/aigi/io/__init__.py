"""Where data comes in: files, folders, zips, manifests and uploads, up to what a model sees.

One path, in order: read the bytes (:mod:`~aigi.io.files`; uploads: :mod:`~aigi.io.uploads`),
decode them (:mod:`~aigi.io.decode`: EXIF orientation, 8-bit RGB, HEIF), place the crops
(:mod:`~aigi.io.crops`), normalise them (:mod:`~aigi.io.preprocessing`), all joined by
:func:`aigi.io.inputs.load_input`. Training's augmentations (:mod:`~aigi.io.augment`) run on
the same path. Datasets, labels and manifests (:mod:`~aigi.io.datasets`), samples and the
public split rule (:mod:`~aigi.io.samples`), and which split a verb scores
(:mod:`~aigi.io.splits`) live here too. Nothing here imports torch or any other aigi package.
"""
