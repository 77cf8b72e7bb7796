"""Backbone, preprocessor and task models (keras-hub's split)."""
