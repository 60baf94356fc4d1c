"""Shared dashboard widgets: the run picker, cached loaders, tables with CSV download."""
