"""Socket helpers shared by the Python integration tests beside this file."""
import socket
import time


def waits_for_close(sock, limit):
    """Seconds until the server closes sock (reads nothing else), or None past limit."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:  # why OSError: ConnectionError and ssl.SSLError are OSErrors
            return time.monotonic() - start
    return None
