"""From runs to a submission: ensembles of runs (ensemble.py) and the sealed offline package (pack.py)."""
