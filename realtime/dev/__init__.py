"""`realtime dev`: one command for a newcomer: an embedded Redis when `REDIS_URL` is unset,
one web, one worker, a demo feed, and the dashboard URL printed."""
