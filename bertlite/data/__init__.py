"""Tokenizers, masking and Lightning DataModules on Hugging Face ``datasets``."""
