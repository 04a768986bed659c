#!/usr/bin/env bash
# `make run`: Kafka and PostgreSQL as local processes, the referral and matching services,
# a demo emergency department with an API key, and a demo roster. Ctrl-C stops all of it.
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

say "importing the demo roster: three coaches on call around the clock for md-mercy and MD"
$HANDOFF matching roster import deploy/demo/roster.json

say "starting the matching service on port $((PORT + 1))"
$HANDOFF matching serve --port "$((PORT + 1))" &
MATCHING=$!
trap 'echo; say "stopping"; kill $MATCHING 2>/dev/null || true; wait $MATCHING 2>/dev/null || true; $HANDOFF dev down' EXIT

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

  Matching offers it to the best coach on call: GET /v1/referrals/<id> shows "offered".
  Notify is not built yet, so no page is sent and no one answers; after the 5-minute ack
  timeout the offer passes to the next coach, up to "unassigned".
  Matching metrics    http://127.0.0.1:$((PORT + 1))/metrics
  Ctrl-C stops the services, Kafka and PostgreSQL.

INFO
say "starting the referral service on port $PORT"
$HANDOFF referral serve --port "$PORT"
