"""Background jobs on SAQ: the tasks, the priority queues, the workers and their settings."""
