"""`rtv serve`: the library over HTTP (FastAPI + uvicorn), a web page at /, and a remote client.

    from retrieval.serve.app import ServeConfig, open_state, create_app   # the server (needs rtv[serve])
    from retrieval import connect                                          # the client (needs httpx)
    idx = connect("http://127.0.0.1:8080/my-index", token="...")
    idx.count("def main"); idx.search("parse dates", k=5)

This package imports nothing heavy: app.py imports FastAPI, client.py imports httpx, each only
when used. docs/serve.md describes the endpoints.
"""
