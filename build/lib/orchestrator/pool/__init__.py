"""The warm pool: the autoscaler policy and the backends that run workers."""
