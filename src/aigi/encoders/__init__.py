"""Image encoders: a batch of pixel tensors -> one feature vector per image.

The :class:`~aigi.encoders.base.Encoder` base, and every kind of encoder beside it: Hugging
Face transformers models (:mod:`~aigi.encoders.hub`), plain-torch convnets
(:mod:`~aigi.encoders.convnets`), the towers of published detectors such as UnivFD's CLIP
ViT-L/14 (:mod:`~aigi.encoders.published`), and the tiny autoencoders of latent-diffusion
generators that make aligned fakes (:mod:`~aigi.encoders.autoencoders`).
:mod:`~aigi.encoders.backbones` maps a backbone name or a saved config to the right one.
They stand on :mod:`aigi.io` (:class:`~aigi.io.preprocessing.Preprocessing`) only.
"""
