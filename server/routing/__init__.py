"""Per-route metadata (one RouteMeta stamp), the decorators that write it, API version mounting, and OpenAPI."""
