"""`python -m data_prep ...` entry point.

The guard matters: conversion workers start through multiprocessing's forkserver, which
imports the main module again in each worker.
"""

import sys

from data_prep.cli import main

if __name__ == "__main__":
    sys.exit(main())
