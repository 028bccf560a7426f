"""gxami benchmarks: each figure is measured against a limit or a peer timed in the same run.

``python -m bench`` prints one JSON line per figure on stdout and nothing else; progress
and notes go to stderr. See bench/README.md for what each figure means.
"""
