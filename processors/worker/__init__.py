"""The worker (`realtime process`): consumer groups on the ingest partitions, one owner per
partition (leases, fencing), the atomic commit of history + fan-out + acks, dead letters,
Redis Cluster slots."""
