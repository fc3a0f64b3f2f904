"""The app's routers, one per area: the labeling pages, the admin pages, the JSON API."""
