"""Server-rendered dashboard: response pages, the bounce report and delivery evidence."""
