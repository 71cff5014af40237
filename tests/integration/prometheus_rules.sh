#!/usr/bin/env bash
# deploy/prometheus/: the scrape config and the alert rules load in Prometheus's
# own checker, and every alert fires on the series that mean trouble and stays
# quiet on a healthy cluster (promtool test rules kmsd-alerts.test.yml).
set -euo pipefail
dir=$(cd "$(dirname "$0")/../../deploy/prometheus" && pwd)
command -v promtool >/dev/null || { echo "FAIL: promtool is missing (apt-get install prometheus)" >&2; exit 1; }
cd "$dir"
promtool check config prometheus.yml
promtool check rules kmsd-alerts.yml
promtool test rules kmsd-alerts.test.yml
# every alert of the rules file is exercised by the unit test file
for a in $(sed -n 's/^ *- alert: *//p' kmsd-alerts.yml); do
  grep -q "alertname: $a\$" kmsd-alerts.test.yml || { echo "FAIL: alert $a has no case in kmsd-alerts.test.yml" >&2; exit 1; }
done
echo "prometheus rules: config, rules and rule tests pass"
