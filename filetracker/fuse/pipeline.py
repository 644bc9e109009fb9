"""Many HEAD requests at once: HTTP/1.1 pipelining on a few connections.

The protocol's listing gives names only, so ``ls -l`` of a folder needs the
size and version of each file: one HEAD per file.  Sent one at a time, each
costs a round trip and, in Python, about a millisecond of client CPU.
Pipelined (all requests written at once, answers read back in order), the
cost is the server's alone: about 2,000 HEADs per second against our server
on two cores, against some 700 with ``requests``.

Answers are matched to requests by order, as HTTP/1.1 requires.  Whatever
does not come back (connection closed early, timeout, a malformed answer) is
simply missing from the result; the caller asks for those names again the
ordinary way.  Works with ``http`` and ``https`` URLs and credentials in the
URL (HTTP Basic).
"""

import base64
import socket
import ssl
import time
import urllib.parse

#: Largest answer header block we accept.
MAX_HEADER_BYTES = 64 * 1024


def _connect(parts, timeout):
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    if parts.scheme == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    return sock


def _request_bytes(parts, path_prefix, name, auth):
    target = path_prefix + "/files" + urllib.parse.quote(name, safe="/")
    lines = ["HEAD %s HTTP/1.1" % target, "Host: %s" % parts.netloc.rpartition("@")[2],
             "Accept-Encoding: identity"]
    if auth:
        lines.append("Authorization: Basic " + auth)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _parse_head(block):
    """``(status, {lowercase header: value})`` of one answer's header block."""
    lines = block.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP answer: %r" % lines[0][:80])
    status = int(rest.split(" ", 1)[0])
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return status, headers


def pipelined_heads(base_url, names, timeout=10.0, connections=2):
    """HEAD every name in ``names``; return ``{name: (status, headers)}`` for those answered.

    ``headers`` keys are lower case.  Never raises for network trouble: the
    names without an answer are just absent.
    """
    parts = urllib.parse.urlsplit(base_url)
    auth = None
    if parts.username is not None:
        credentials = "%s:%s" % (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        auth = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    prefix = parts.path.rstrip("/")
    names = list(names)
    results = {}
    if not names:
        return results
    share = (len(names) + connections - 1) // connections
    groups = [names[i:i + share] for i in range(0, len(names), share)]
    socks = []
    deadline = time.monotonic() + timeout
    try:
        for group in groups:
            sock = _connect(parts, timeout)
            sock.setblocking(False)
            socks.append([sock, group, b"".join(_request_bytes(parts, prefix, n, auth) for n in group), b"", 0])
        _pump(socks, results, deadline)
    except OSError:
        pass
    finally:
        for entry in socks:
            try:
                entry[0].close()
            except OSError:
                pass
    return results


def _pump(socks, results, deadline):
    """Write the requests and read the answers of every connection, interleaved."""
    import selectors

    sel = selectors.DefaultSelector()
    for entry in socks:
        sel.register(entry[0], selectors.EVENT_READ | selectors.EVENT_WRITE, entry)
    active = len(socks)
    while active:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for key, events in sel.select(min(left, 1.0)):
            entry = key.data
            sock, group, outgoing, incoming, done = entry
            try:
                if events & selectors.EVENT_WRITE and outgoing:
                    sent = sock.send(outgoing[:1 << 20])
                    entry[2] = outgoing = outgoing[sent:]
                    if not outgoing:
                        sel.modify(sock, selectors.EVENT_READ, entry)
                if events & selectors.EVENT_READ:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise ConnectionError("closed")
                    incoming += chunk
                    while done < len(group):
                        end = incoming.find(b"\r\n\r\n")
                        if end < 0:
                            if len(incoming) > MAX_HEADER_BYTES:
                                raise ValueError("answer header too large")
                            break
                        results[group[done]] = _parse_head(incoming[:end])
                        incoming = incoming[end + 4:]
                        done += 1
                    entry[3], entry[4] = incoming, done
            except (OSError, ValueError, ssl.SSLError):
                done = len(group)  # give up on this connection; the rest is asked again elsewhere
                entry[4] = done
            if done >= len(group):
                sel.unregister(sock)
                active -= 1
    sel.close()
