"""Fan-out between processes: the worker publishes each topic on its own Redis channel;
every web instance listens on the channels of the topics it hosts (classic pub/sub, or
sharded pub/sub on a Redis Cluster) and hands `update`s to delivery."""
