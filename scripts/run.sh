#!/usr/bin/env bash
# `make run`: Kafka and PostgreSQL as local processes, the referral, matching and notify
# services, demo data (six emergency departments in three states, twenty coaches). Pages go to
# the sandbox provider, whose inbox is a local web page. Ctrl-C stops all of it.
# Ports from the environment, to run beside another instance: KAFKA_PORT (9092),
# POSTGRES_PORT (5433), REFERRAL_PORT (8001), MATCHING_PORT (referral + 1), NOTIFY_PORT
# (referral + 2), MLLP_PORT (2575), MLLP_HTTP_PORT (referral + 3) for the HL7 listener and
# CONSOLE_PORT (referral + 4) for the coordinator console, REPORTS_PORT (referral + 5) for
# the program reports;
# HANDOFF_DEV_DIR for the state directory.
# A service that exits by itself (a crash, kill -9) stops the others but keeps Kafka,
# PostgreSQL and their data: the script says which one died, and `make run` again resumes
# on that data (`handoff dev down` wipes it). Only Ctrl-C ends the demo and its data.
set -euo pipefail
cd "$(dirname "$0")/.."
HANDOFF=.venv/bin/handoff
PORT=${REFERRAL_PORT:-8001}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

DEV_DIR="${HANDOFF_DEV_DIR:-.handoff/dev}"
DEMO_FILE="$DEV_DIR/demo-credentials"  # the demo's API key and console password, to resume
# Tokens and link secrets made up by this script, kept so that a resumed demo keeps them:
# new ones would void every link already texted and every token already printed.
SECRETS_FILE="$DEV_DIR/secrets"
# How to resume this instance: with the ports and directory it was given.
RESUME="make run"
for name in REPORTS_PORT CONSOLE_PORT MLLP_HTTP_PORT MLLP_PORT NOTIFY_PORT MATCHING_PORT \
    REFERRAL_PORT POSTGRES_PORT KAFKA_PORT HANDOFF_DEV_DIR; do
  if [[ -n "${!name:-}" ]]; then RESUME="$name=${!name} $RESUME"; fi
done
# Another instance still serving on these ports (its script killed, its services left)
# would share them with this one, each taking some of the requests (fresh34d).
for port in "$PORT" "${MATCHING_PORT:-$((PORT + 1))}" "${NOTIFY_PORT:-$((PORT + 2))}" \
    "${MLLP_HTTP_PORT:-$((PORT + 3))}" "${CONSOLE_PORT:-$((PORT + 4))}" \
    "${REPORTS_PORT:-$((PORT + 5))}" "${MLLP_PORT:-2575}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is already in use (another make run's services?): stop them first"
    exit 1
  fi
done
RESUMING=""
# Data left by a demo that did not end with Ctrl-C (a service, PostgreSQL, Kafka or the
# machine went down): used again, whether or not PostgreSQL and Kafka still run (fresh34d:
# after they died, `make run` seeded anew over the data and then wiped it).
if [[ -s "$DEMO_FILE" && -e "$DEV_DIR/state.json" ]]; then
  RESUMING=yes
else
  rm -f "$SECRETS_FILE"
fi
kept() {  # kept NAME BYTES: $NAME if given, else this demo's kept value, else a new one (kept)
  local name=$1 bytes=$2 value
  value="${!name:-}"
  if [[ -z "$value" && -s "$SECRETS_FILE" ]]; then
    value="$(sed -n "s/^$name=//p" "$SECRETS_FILE")"
  fi
  if [[ -z "$value" ]]; then
    value="$(head -c "$bytes" /dev/urandom | base64)"
    mkdir -p "$DEV_DIR"
    (umask 077; echo "$name=$value" >>"$SECRETS_FILE")
  fi
  printf '%s' "$value"
}
say "starting Apache Kafka and PostgreSQL 15"
$HANDOFF dev up --kafka-port "${KAFKA_PORT:-9092}" --postgres-port "${POSTGRES_PORT:-5433}"
eval "$($HANDOFF dev env)"
# Until the services start: a failure ends a fresh demo, but never wipes a resumed one.
trap 'echo; say "stopping"; [[ -n "$RESUMING" ]] || { $HANDOFF dev down; rm -f "$DEMO_FILE" "$SECRETS_FILE"; }' EXIT

if [[ -n "$RESUMING" ]]; then
  say "resuming on the demo data kept from the last run (handoff dev down wipes it)"
  read -r KEY DEMO_PASSWORD <"$DEMO_FILE"
else
  say "seeding the demo: six emergency departments in MD, RI and VT, twenty coaches, their shifts"
  KEY=$($HANDOFF demo seed)
fi

MATCHING_PORT=${MATCHING_PORT:-$((PORT + 1))}
NOTIFY_PORT=${NOTIFY_PORT:-$((PORT + 2))}
MLLP_PORT=${MLLP_PORT:-2575}
MLLP_HTTP_PORT=${MLLP_HTTP_PORT:-$((PORT + 3))}
CONSOLE_PORT=${CONSOLE_PORT:-$((PORT + 4))}  # PORT + 3 is the MLLP listener's HTTP port
REPORTS_PORT=${REPORTS_PORT:-$((PORT + 5))}

# The services' admin APIs, which the coordinator console drives: fresh tokens for every
# new demo unless given, the same when it resumes (the banner prints them, for curl).
REFERRAL_ADMIN_TOKEN="$(kept REFERRAL_ADMIN_TOKEN 24)"
MATCHING_ADMIN_TOKEN="$(kept MATCHING_ADMIN_TOKEN 24)"
NOTIFY_ADMIN_TOKEN="$(kept NOTIFY_ADMIN_TOKEN 24)"
REPORTS_ADMIN_TOKEN="$(kept REPORTS_ADMIN_TOKEN 24)"
export REFERRAL_ADMIN_TOKEN MATCHING_ADMIN_TOKEN NOTIFY_ADMIN_TOKEN REPORTS_ADMIN_TOKEN
# The coach's page links (/p/) notify signs, and the referral service's visit (/v/) and
# follow-up (/f/) links (issue #16), signed with one secret both are given; the referral
# service seals patients' callback numbers with a Fernet key, kept beside the dev database
# so a restart can still read them.
NOTIFY_LINK_SECRET="$(kept NOTIFY_LINK_SECRET 32)"
FOLLOW_UP_LINK_SECRET="$(kept FOLLOW_UP_LINK_SECRET 32)"
export FOLLOW_UP_LINK_SECRET
KEY_FILE="${HANDOFF_DEV_DIR:-.handoff/dev}/follow-up-keys"
if [[ -z "${FOLLOW_UP_KEYS:-}" ]]; then
  if [[ ! -s "$KEY_FILE" ]]; then
    mkdir -p "$(dirname "$KEY_FILE")"
    (umask 077; .venv/bin/python -c \
      'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' >"$KEY_FILE")
  fi
  FOLLOW_UP_KEYS="$(cat "$KEY_FILE")"
fi
export FOLLOW_UP_KEYS
# Notify takes SMS replies (POST /v1/twilio/sms) only when it can check their signature.
# A token given is kept with the secrets, so the printed resume command needs no secret
# on its line and a resumed demo still takes the replies it took.
if [[ -n "${TWILIO_AUTH_TOKEN:-}" ]]; then
  mkdir -p "$DEV_DIR"
  (umask 077; { sed '/^TWILIO_AUTH_TOKEN=/d' "$SECRETS_FILE" 2>/dev/null || true
    echo "TWILIO_AUTH_TOKEN=$TWILIO_AUTH_TOKEN"; } >"$SECRETS_FILE.new")
  mv "$SECRETS_FILE.new" "$SECRETS_FILE"
elif [[ -s "$SECRETS_FILE" ]] && grep -q '^TWILIO_AUTH_TOKEN=' "$SECRETS_FILE"; then
  TWILIO_AUTH_TOKEN="$(sed -n 's/^TWILIO_AUTH_TOKEN=//p' "$SECRETS_FILE")"
  export TWILIO_AUTH_TOKEN
fi
if [[ -n "${TWILIO_AUTH_TOKEN:-}" ]]; then
  SMS_REPLIES="on: http://127.0.0.1:$NOTIFY_PORT/v1/twilio/sms, signed with TWILIO_AUTH_TOKEN"
else
  SMS_REPLIES="off: start with TWILIO_AUTH_TOKEN=<any secret> make run to take signed replies"
fi
if [[ -z "$RESUMING" ]]; then
  say "adding the console's demo accounts"
  DEMO_PASSWORD="demo-$(head -c 9 /dev/urandom | base64 | tr '+/' '-_')"
  for account in "md-coordinator coordinator --state MD" "md-reader read_only --state MD" \
      "supervisor supervisor --state MD --state RI --state VT"; do
    read -r user role scope <<<"$account"
    # shellcheck disable=SC2086  # the scope is several options
    $HANDOFF console users add --username "$user" --role "$role" $scope --password-stdin \
      <<<"$DEMO_PASSWORD" >/dev/null
  done
  (umask 077; echo "$KEY $DEMO_PASSWORD" >"$DEMO_FILE")
fi
PIDS=()
declare -A NAMES=()  # pid -> the service's name, to say which one died
DIED=""
INTERRUPTED=""
stop_all() {
  # The services go first, and nothing printed may stop this: after a hangup the terminal
  # is gone and every echo fails.
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ -n "$INTERRUPTED" ]]; then  # Ctrl-C or TERM: the operator ends the demo
    { echo; say "stopping"; } 2>/dev/null
    $HANDOFF dev down
    rm -f "$DEMO_FILE" "$SECRETS_FILE"
    return
  fi
  # A crash or a closed terminal is not a request to throw the demo away: keep Kafka,
  # PostgreSQL and the data.
  {
    echo; say "${DIED:-the script ended}; the other services are stopped"
    cat <<KEPT
  Kafka and PostgreSQL are still running, with every referral, visit, follow-up and audit
  entry kept (state in $DEV_DIR). To carry on:  $RESUME
  (resumes on this data, ports, links and tokens). To throw it all away:
  ${HANDOFF_DEV_DIR:+HANDOFF_DEV_DIR=$HANDOFF_DEV_DIR }$HANDOFF dev down
KEPT
  } 2>/dev/null
}
trap stop_all EXIT
trap 'INTERRUPTED=yes' INT TERM
# A hangup (the terminal closed, an SSH session dropped) keeps the demo, as a crash does
# (fresh34b: it wiped every referral and token).
trap 'DIED="the terminal hung up (SIGHUP)"' HUP
start() {  # start NAME COMMAND...: a service in the background, remembered by pid
  local name=$1; shift
  "$@" &
  PIDS+=($!)
  NAMES[$!]=$name
}

say "starting the matching service on port $MATCHING_PORT"
start matching $HANDOFF matching serve --port "$MATCHING_PORT"

say "starting the notify service on port $NOTIFY_PORT, paging into the sandbox"
# HELP gives coaches a supervisor line: the demo roster's supervisor for Maryland, Rita O.
# (issue #12), and Paul E. for the Rhode Island and Vermont sites.
RI_VT_SUPERVISOR='{"ri-miriam": "+14105550120", "ri-kent": "+14105550120", "vt-uvm": "+14105550120", "vt-rutland": "+14105550120"}'
NOTIFY_DELIVERY=sandbox NOTIFY_PUBLIC_URL="http://127.0.0.1:$NOTIFY_PORT" \
  NOTIFY_SUPERVISOR_PHONE="${NOTIFY_SUPERVISOR_PHONE:-+14105550119}" \
  SITE_SUPERVISOR_PHONES="${SITE_SUPERVISOR_PHONES:-$RI_VT_SUPERVISOR}" \
  NOTIFY_LINK_SECRET="$NOTIFY_LINK_SECRET" \
  REFERRAL_PUBLIC_URL="http://127.0.0.1:$PORT" \
  start notify $HANDOFF notify serve --port "$NOTIFY_PORT"

say "starting the HL7 v2 MLLP listener on port $MLLP_PORT (operations on $MLLP_HTTP_PORT)"
start "MLLP listener" $HANDOFF referral mllp serve --port "$MLLP_PORT" --http-port "$MLLP_HTTP_PORT"

say "starting the reports service on port $REPORTS_PORT"
start reports $HANDOFF reports serve --port "$REPORTS_PORT"

say "starting the coordinator console on port $CONSOLE_PORT"
CONSOLE_SECURE_COOKIES=false \
  CONSOLE_REFERRAL_URL="http://127.0.0.1:$PORT" \
  CONSOLE_MATCHING_URL="http://127.0.0.1:$MATCHING_PORT" \
  CONSOLE_NOTIFY_URL="http://127.0.0.1:$NOTIFY_PORT" \
  CONSOLE_REPORTS_URL="http://127.0.0.1:$REPORTS_PORT" \
  start console $HANDOFF console serve --port "$CONSOLE_PORT"

cat <<INFO

  Referral API docs   http://127.0.0.1:$PORT/docs
  Metrics             http://127.0.0.1:$PORT/metrics
  Health / readiness  http://127.0.0.1:$PORT/healthz  http://127.0.0.1:$PORT/readyz
  Kafka / PostgreSQL  $KAFKA_BOOTSTRAP_SERVERS  $DATABASE_URL

  Post a referral as the demo hospital (Mercy ED, md-mercy):

  curl -s -X POST http://127.0.0.1:$PORT/v1/referrals \\
    -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\
    -d '{"external_id": "demo-1", "urgency": "urgent", "location": "ED bay 4",
         "callback_phone": "+14105550100",
         "patient": {"preferred_language": "en", "interpreter_needed": false,
                     "substances": ["opioids"], "consent": "obtained"}}'

  Matching offers it to the best coach on call and notify pages them: the SMS appears in
  the sandbox inbox below. Open its link to accept, then GET /v1/referrals/<id> shows
  "accepted" with its timeline. Unanswered, the offer passes to the next coach after the
  5-minute ack timeout, up to "unassigned".

  Or watch a whole story play by itself (a decline, an accept, arrival, completion):

  .venv/bin/handoff demo play --key $KEY \
      --referral-url http://127.0.0.1:$PORT --notify-url http://127.0.0.1:$NOTIFY_PORT

  Sandbox inbox       http://127.0.0.1:$NOTIFY_PORT/sandbox
  Coordinator console http://127.0.0.1:$CONSOLE_PORT  (plain HTTP: a demo only)
      sign in as md-coordinator (Maryland's schedules), md-reader (read-only, Maryland)
      or supervisor (MD, RI, VT; dispatch settings too), password: $DEMO_PASSWORD
  SMS replies         $SMS_REPLIES
  Admin API tokens    referral $REFERRAL_ADMIN_TOKEN
      (Bearer)        matching $MATCHING_ADMIN_TOKEN  (/v1/admin/sites/<id>/dispatch …)
                      notify   $NOTIFY_ADMIN_TOKEN  (/v1/admin/contact-methods: opted-out numbers)
                      reports  $REPORTS_ADMIN_TOKEN  (/v1/reports/monthly?month=YYYY-MM)
  Matching metrics    http://127.0.0.1:$MATCHING_PORT/metrics
  Notify metrics      http://127.0.0.1:$NOTIFY_PORT/metrics
  Reports             http://127.0.0.1:$REPORTS_PORT/v1/reports/monthly (console: /reports)
  HL7 v2 over MLLP    127.0.0.1:$MLLP_PORT (metrics http://127.0.0.1:$MLLP_HTTP_PORT/metrics)
      sender EPIC / MERCY (MSH-3 / MSH-4) is Mercy ED: deploy/demo/mercy-epic.json
  Ctrl-C stops the services, Kafka and PostgreSQL (their data is gone). A service that
  dies by itself stops the others but keeps the data: make run again resumes on it.

INFO
say "starting the referral service on port $PORT"
start referral $HANDOFF referral serve --port "$PORT"
# Until the first service exits (or Ctrl-C): which one, and how, decides what is kept.
status=0
wait -n -p ENDED "${PIDS[@]}" || status=$?
if [[ -z "$INTERRUPTED" && -n "${ENDED:-}" ]]; then
  DIED="the ${NAMES[$ENDED]} service exited (status $status)"
  exit 1
fi
