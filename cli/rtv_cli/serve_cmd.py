"""`rtv serve DIR...`: the indexes over HTTP (JSON API, OpenAPI at /docs, a web page at /)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket

import click

LOOPBACK = "127.0.0.1"


class _LimitType(click.ParamType):
    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        from retrieval.serve.limits import Limits

        if not isinstance(value, str):
            return value
        key, sep, num = value.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in Limits.names() or not num.strip().isdigit():
            self.fail(f"{value!r}: use NAME=NUMBER with NAME one of {', '.join(Limits.names())}", param, ctx)
        return key, int(num)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets whose proto says TCP; without it each response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                                   "choose another port (or --port 0 for a free one)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@click.argument("indexes", metavar="[NAME=]DIR...", nargs=-1, required=True)
@click.option("--host", default=LOOPBACK, show_default=True,
              help="Address to listen on. Anything but a loopback address exposes the indexes to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: a free port (printed).")
@click.option("--token", envvar="RTV_SERVE_TOKEN", default=None,
              help="Require `Authorization: Bearer TOKEN` on every /v1 request (or set RTV_SERVE_TOKEN).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes (each opens the indexes and loads the models).")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Library calls in flight at once per process (the C++ core releases the GIL).")
@click.option("--reranker", default=None, help="Cross-encoder directory for hybrid reranking (default: the default "
                                                 "cross-encoder when it is on disk).")
@click.option("--no-rerank", is_flag=True, help="Never rerank (no cross-encoder is loaded).")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from ORIGIN to call the API (repeat; off by default).")
@click.option("--limit", "limits", multiple=True, type=_LimitType(),
              help="Change a limit, e.g. --limit max_k=100 --limit max_body_bytes=4194304 (docs/serve.md lists them).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--silent", is_flag=True, help="No notices on stderr (errors still go there).")
def serve(indexes, host, port, token, workers, threads, reranker, no_rerank, cors, limits, device, access_log, silent):
    """Serve index directories over HTTP: /v1/NAME/count, find, cnf, extract, snippet, ngrams, query,
    contamination, info; /health; OpenAPI at /docs; the web page at /.

    Each DIR is served under its directory name, or under NAME with NAME=DIR. Indexes and models
    load once, at start. Ctrl-C (SIGINT) or SIGTERM finish the requests in flight, then stop.
    """
    from retrieval import progress
    from retrieval.errors import RtvError

    if silent:
        progress.set_silent(True)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again; these handlers
    # turn that (or a signal while the indexes load) into a clean exit with status 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        _serve(indexes, host, port, token, workers, threads, reranker, no_rerank, cors, limits, device, access_log)
    except RtvError as exc:
        raise click.ClickException(str(exc)) from None
    except _Stopped:
        pass
    except Exception as exc:  # noqa: BLE001 - a library bug must not reach the user as a traceback
        raise click.ClickException(f"rtv serve failed: {type(exc).__name__}: {exc}") from None
    if not silent:
        click.echo("rtv serve: stopped", err=True)


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped()


def _serve(indexes, host, port, token, workers, threads, reranker, no_rerank, cors, limits, device, access_log):
    from retrieval import progress
    from retrieval.errors import MissingDependencyError
    from retrieval.serve.limits import Limits

    try:
        import uvicorn  # noqa: F401

        from retrieval.serve.app import CONFIG_ENV, ServeConfig, create_app, open_state, parse_index_arg
    except (ImportError, MissingDependencyError) as exc:
        msg = str(exc) if isinstance(exc, MissingDependencyError) else f"{exc.name or exc} is not installed"
        raise click.ClickException(f"rtv serve needs the serve extra ({msg}); install it with: pip install 'rtv[serve]'") from None
    import uvicorn

    pairs = [parse_index_arg(a) for a in indexes]
    if workers > 1 and port == 0:
        raise click.UsageError("--port 0 needs --workers 1 (worker processes share one known port)")
    if not _is_loopback(host) and not token:
        progress.note(f"listening on {host} without --token: anyone who can reach this address can query the indexes")
    config = ServeConfig(indexes=pairs, token=token or None, threads=threads, cors=list(cors), reranker=reranker,
                         rerank=not no_rerank, device=device, limits=Limits(**dict(limits)))
    sock = _bind(host, port)  # before the slow part, so a taken port fails at once
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    uv = dict(log_level="info" if access_log else "warning", access_log=access_log, timeout_graceful_shutdown=10,
              timeout_keep_alive=30)
    if workers > 1:
        sock.close()
        for name, path in pairs:  # fail here, once, rather than in every worker
            open_state(ServeConfig(indexes=[(name, path)], rerank=False, warm_up=False)).close()
        os.environ[CONFIG_ENV] = config.to_json()
        click.echo(f"rtv serve: {url} ({len(pairs)} index(es): {', '.join(n for n, _ in pairs)}; {workers} workers)",
                   err=True)
        uvicorn.run("retrieval.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers, **uv)
        return
    state = open_state(config)
    app = create_app(state)
    state.on_ready = lambda: click.echo(
        f"rtv serve: {url} ({len(pairs)} index(es): {', '.join(n for n, _ in pairs)}; API docs at {url}docs)", err=True)
    server = uvicorn.Server(uvicorn.Config(app, **uv))
    server.run(sockets=[sock])
