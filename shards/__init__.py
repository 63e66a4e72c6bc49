"""The data side's ground floor, two rooms with a one-way arrow between them:

- shards.format: the dataset format (sample schema, the webdataset and TFRecord codecs, shard
  naming, the split index, readers, JPEG frames, storage local or in a bucket);
- shards.input: the training input (shard sources, order, temporal sampling, augmentation,
  batching, worker processes, `make_input`), which reads the format and is never read by it.
"""
