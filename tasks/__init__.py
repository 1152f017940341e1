"""Tasks shipped with nasflow (installed as ``nasflow.tasks``); each comes with a YAML config."""
