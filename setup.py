# Lets Beam's --setup_file package this project for remote workers; the metadata is in pyproject.toml.
from setuptools import setup

setup()
