# The metadata is in pyproject.toml. This file adds the optional C extension shards.format._jpeg_region
# (region-of-interest JPEG decoding against the system's libjpeg-turbo: Debian/Ubuntu
# libjpeg-dev, Fedora libjpeg-turbo-devel); where it cannot be built the install still succeeds
# and the training input decodes whole frames with simplejpeg. It also lets Beam's --setup_file
# package this project for remote workers.
from setuptools import Extension, setup

setup(ext_modules=[Extension("shards.format._jpeg_region", ["shards/format/_jpeg_region.c"], libraries=["jpeg"],
                             extra_compile_args=["-O2"], optional=True)])
