"""The harness's it.env (KEY=VALUE lines, written by harness.sh start) as a dict, for the Python
integration tests beside this file."""


def load(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    return env
