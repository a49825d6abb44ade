"""The bare Flask baseline for bench/http_throughput.py: one endpoint, nothing else."""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    """The cheapest possible answer."""
    return {"hello": "world"}
