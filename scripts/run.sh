#!/usr/bin/env bash
# `make run`: Kafka and PostgreSQL as local processes, the referral service, and a demo
# emergency department with an API key. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
HANDOFF=.venv/bin/handoff
PORT=${REFERRAL_PORT:-8001}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "starting Apache Kafka and PostgreSQL 15"
$HANDOFF dev up
eval "$($HANDOFF dev env)"
trap 'echo; say "stopping"; $HANDOFF dev down' EXIT

say "registering the demo emergency department (md-mercy) and creating an API key"
$HANDOFF referral site add --id md-mercy --name "Mercy Medical Center" \
  --short-name "Mercy ED" --state MD --time-zone America/New_York
KEY=$($HANDOFF referral key create --site md-mercy --label "demo" 2>/dev/null)

cat <<INFO

  Referral API docs   http://127.0.0.1:$PORT/docs
  Metrics             http://127.0.0.1:$PORT/metrics
  Health / readiness  http://127.0.0.1:$PORT/healthz  http://127.0.0.1:$PORT/readyz
  Kafka / PostgreSQL  $KAFKA_BOOTSTRAP_SERVERS  $DATABASE_URL

  Post a referral as the demo hospital:

  curl -s -X POST http://127.0.0.1:$PORT/v1/referrals \\
    -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\
    -d '{"external_id": "demo-1", "urgency": "urgent", "location": "ED bay 4",
         "callback_phone": "+14105550100",
         "patient": {"preferred_language": "en", "interpreter_needed": false,
                     "substances": ["opioids"], "consent": "obtained"}}'

  Matching and notify are not built yet: the referral stays "received".
  Ctrl-C stops the service, Kafka and PostgreSQL.

INFO
say "starting the referral service on port $PORT"
$HANDOFF referral serve --port "$PORT"
