#!/usr/bin/env bash
# Renders a config template: every @NAME@ (NAME of [A-Z0-9_]) is replaced by the
# value of the environment variable NAME. A placeholder whose variable is unset
# is an error (a half-rendered config must not start a server).
# Shared by deploy/local-cluster.sh and the containers of deploy/docker-compose.yml.
#   render.sh TEMPLATE OUTPUT      (OUTPUT is written mode 0644 via a temp file + rename)
set -euo pipefail
in=${1:?usage: render.sh TEMPLATE OUTPUT}
out=${2:?usage: render.sh TEMPLATE OUTPUT}
text=$(cat "$in"; echo x)
text=${text%x}
names=$(grep -o '@[A-Z0-9_]*@' "$in" | sort -u | tr -d @ || true)
for name in $names; do
  if [ -z "${!name+set}" ]; then
    echo "render: $in needs \$$name, which is not set" >&2
    exit 1
  fi
  text=${text//"@$name@"/${!name}}
done
printf '%s' "$text" > "$out.tmp.$$"
chmod 644 "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
