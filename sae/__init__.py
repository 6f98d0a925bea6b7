"""TopK sparse autoencoders: model, kernels, training, metrics; data/ reads models and corpora, formats/ reads and
writes SAE files.
"""
