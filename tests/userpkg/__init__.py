"""A user's own package, outside adalase_tune: models and data that the tool reaches by reference
(``userpkg.models:build_cnn``) or through entry points; nothing is registered inside the package."""
