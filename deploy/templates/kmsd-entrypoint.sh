#!/usr/bin/env bash
# Entry point of the kmsd containers of deploy/docker-compose.yml: renders the
# node's kms.properties from the shared template (deploy/templates/kms.properties.in,
# values from the environment: NODE_NAME, NODE_ADDRESS, NODE_PORT, PKI_DIR, HSM_HOST,
# HSM_PORT, CACHE_TYPE, REDIS_URL, REDIS_PASSWORD_FILE, CLUSTER_KEY_FILE, KEYSTORE_FILE,
# CLUSTER_NAME, AUDIT_FILE, LOG_LEVEL), seeds the node's own keystore file from
# PKI_DIR/kms.jks when it has none yet, then
#   kmsd-entrypoint.sh              exec kmsd
#   kmsd-entrypoint.sh create-key   kmsctl hsm create-key kms-master, once (a marker
#                                   file in PKI_DIR records that it was made)
set -euo pipefail
share=/usr/local/share/kmsd
conf=${KMS_RUN_DIR:-/run/kmsd}/kms.properties
"$share/render.sh" "$share/kms.properties.in" "$conf"
if [ ! -f "$KEYSTORE_FILE" ]; then
  mkdir -p "$(dirname "$KEYSTORE_FILE")"
  install -m 0600 "$PKI_DIR/kms.jks" "$KEYSTORE_FILE"
fi
case "${1:-serve}" in
  serve) exec /usr/local/bin/kmsd --config "$conf" ;;
  create-key)
    marker=$PKI_DIR/.kms-master-created
    [ -f "$marker" ] && { echo "kms-master already created"; exit 0; }
    KMS_CONFIG=$conf /usr/local/bin/kmsctl hsm create-key kms-master
    touch "$marker" ;;
  *) exec "$@" ;;
esac
