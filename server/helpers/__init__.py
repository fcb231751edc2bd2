"""Small pieces shared by controllers, middlewares and workers."""
