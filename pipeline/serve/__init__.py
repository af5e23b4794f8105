"""The search service (``pamtri serve``): a FastAPI app over one index and one two-stage pipeline.

``app`` holds the HTTP API and the page, ``batching`` the dynamic batcher that turns concurrent requests into one
model call. Imported only by ``pamtri serve`` and the bench (FastAPI is the optional ``serve`` extra).
"""
