# scripts/workflow/lib.sh: what provision-vm and cleanup-vm share (POSIX sh,
# sourced): the run's identity and names, the state kept between the two,
# the Hetzner Cloud and Tailscale API calls, the cleanup, and the callbacks.
#
# Secrets (API tokens, the Tailscale auth key) travel only through files and
# pipes: curl reads its Authorization header from a 0600 file (-H @file), jq
# reads the auth key with --rawfile, so no process's argument list holds one.
# shellcheck shell=sh
# shellcheck disable=SC2034,SC2154 # the callers set prog, need_agent and
# scripts_dir, and use the names load_run sets

nl='
'

say() { echo "$prog: $*" >&2; }

# annotate LEVEL MESSAGE: a GitHub Actions annotation (error, warning or
# notice) inside a run, a plain line on stderr elsewhere.
annotate() {
    if [ "${GITHUB_ACTIONS:-}" = true ]; then
        printf '::%s title=%s::%s\n' "$1" "$prog" "$(printf '%s' "$2" | tr '\n' ' ')"
    else
        say "$1: $2"
    fi
}

usage_error() {
    annotate error "$*"
    exit 2
}

is_uint() {
    case $1 in
    '' | *[!0-9]*) return 1 ;;
    esac
    return 0
}

# is_duration VALUE: seconds, a fraction allowed (GNU sleep takes it).
is_duration() {
    case $1 in
    '' | *[!0-9.]* | *.*.* | .* | *.) return 1 ;;
    esac
    return 0
}

is_uuid() {
    printf '%s' "$1" | grep -Eqx '[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}'
}

# one_line TEXT: the text on one line, at most 400 characters, for error
# texts and annotations.
one_line() {
    printf '%s' "$1" | tr '\r\n\t' '   ' | cut -c1-400
}

# ---- the run ------------------------------------------------------------------

# load_run: job and agent ids (options or JOB_ID/AGENT_ID), the run
# (GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT), the names derived from them and the
# state directory. Exits 2 on bad input.
load_run() {
    job_id=$(printf '%s' "${opt_job_id:-${JOB_ID:-}}" | tr 'A-F' 'a-f')
    agent_id=$(printf '%s' "${opt_agent_id:-${AGENT_ID:-}}" | tr 'A-F' 'a-f')
    run_id=${GITHUB_RUN_ID:-}
    run_attempt=${GITHUB_RUN_ATTEMPT:-1}
    [ -n "$job_id" ] || usage_error "no job id: pass --job-id or set JOB_ID"
    is_uuid "$job_id" || usage_error "job id '$(one_line "$job_id")' is not a uuid"
    [ -n "$run_id" ] || usage_error "GITHUB_RUN_ID is not set (GitHub Actions sets it; set it by hand to run outside a workflow)"
    if ! is_uint "$run_id" || [ ${#run_id} -gt 19 ]; then
        usage_error "GITHUB_RUN_ID must be a positive integer, got '$(one_line "$run_id")'"
    fi
    if ! is_uint "$run_attempt" || [ ${#run_attempt} -gt 9 ] || [ "$run_attempt" -lt 1 ]; then
        usage_error "GITHUB_RUN_ATTEMPT must be a positive integer, got '$(one_line "$run_attempt")'"
    fi

    # One name per attempt: a re-run never collides with the server of the
    # attempt before it (Hetzner names are unique per project). The name is
    # also the tailnet hostname.
    job8=${job_id%%-*}
    name_prefix="agent-$job8-$run_id-"
    server_name="$name_prefix$run_attempt"
    # Every attempt of this run, and nothing of another run: a run that
    # stands down never touches the servers of the run that owns the job.
    label_selector="provision-job=$job_id,provision-run=$run_id"
    run_url=
    if [ -n "${GITHUB_REPOSITORY:-}" ]; then
        run_url="${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY/actions/runs/$run_id/attempts/$run_attempt"
    fi
    delivery_prefix="gh.$run_id.$run_attempt.$job_id"

    state=${PROVISION_STATE_DIR:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/provision-$job_id-$run_id-$run_attempt}
    (umask 077 && mkdir -p "$state") || usage_error "cannot create the state directory $state"
    work=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX") || usage_error "cannot create a temporary directory"
    trap 'rm -rf "$work"' EXIT

    if [ "$need_agent" = 1 ]; then
        [ -n "$agent_id" ] || input_error "no agent id: pass --agent-id or set AGENT_ID"
        is_uuid "$agent_id" || input_error "agent id '$(one_line "$agent_id")' is not a uuid"
    fi
}

# input_error MESSAGE: bad input or configuration of a run whose job is
# known, kept as the reason that cleanup-vm reports. Exits 2.
input_error() {
    state_set reason "check inputs and secrets: $1${run_url:+ ($run_url)}"
    state_set outcome failed
    usage_error "$1"
}

# state_set KEY VALUE, state_get KEY: what provision-vm leaves for cleanup-vm
# (written whole, so a kill never leaves half a value).
state_set() {
    printf '%s\n' "$2" > "$state/$1.tmp" && mv "$state/$1.tmp" "$state/$1"
}

state_get() {
    [ -f "$state/$1" ] && cat "$state/$1"
}

# ---- configuration -----------------------------------------------------------

# secret_header FILE VAR: writes "Authorization: Bearer <secret>" to FILE from
# $VAR or from the first line of the file named by ${VAR}_FILE. False if
# neither is set.
secret_header() {
    eval "secret_value=\${$2:-} secret_path=\${$2_FILE:-}"
    # shellcheck disable=SC2154 # set by the eval above
    if [ -n "$secret_value" ]; then
        case $secret_value in
        *"$nl"* | *' '*) usage_error "$2 holds a space or a line break" ;;
        esac
        printf 'Authorization: Bearer %s\n' "$secret_value" > "$1"
    elif [ -n "$secret_path" ]; then
        [ -r "$secret_path" ] || usage_error "cannot read $2_FILE '$secret_path'"
        { printf 'Authorization: Bearer '; sed -n '1{s/\r$//;p;}' "$secret_path"; } > "$1"
        grep -Eq '^Authorization: Bearer [^ ]+$' "$1" || usage_error "the first line of $2_FILE is empty or holds a space"
    else
        secret_value=
        return 1
    fi
    secret_value=
    return 0
}

load_apis() {
    hcloud_api=${HCLOUD_API:-https://api.hetzner.cloud}
    tailscale_api=${TAILSCALE_API:-https://api.tailscale.com}
    tailnet=${TAILSCALE_TAILNET:--}
    for u in "$hcloud_api" "$tailscale_api"; do
        case $u in
        http://* | https://*) ;;
        *) usage_error "API base URL '$u' must start with http:// or https://" ;;
        esac
    done
    hcloud_api=${hcloud_api%/}
    tailscale_api=${tailscale_api%/}
    case $tailnet in
    '' | *[!A-Za-z0-9._@-]*) usage_error "TAILSCALE_TAILNET '$tailnet' is not a tailnet name" ;;
    esac
    have_hcloud=0 have_tailscale=0
    secret_header "$work/hcloud.header" HCLOUD_TOKEN && have_hcloud=1
    secret_header "$work/tailscale.header" TAILSCALE_API_KEY && have_tailscale=1
}

# ---- the APIs -----------------------------------------------------------------

# api SERVICE METHOD PATH [BODY_FILE]: one call to the Hetzner Cloud
# (hcloud) or Tailscale (tailscale) API. The answer's body is in
# $work/resp, its status in $api_status (000: no answer), and $api_what
# describes the outcome on one line. GET and DELETE are retried on no
# answer, 429 and 5xx; a POST is sent once (a lost answer may hide a
# created server: the cleanup finds it by its labels). True on 2xx.
api() {
    api_service=$1 api_method=$2 api_path=$3 api_body=${4:-}
    if [ "$api_service" = hcloud ]; then
        api_base=$hcloud_api api_label="Hetzner API"
    else
        api_base=$tailscale_api api_label="Tailscale API"
    fi
    api_try=1
    api_tries=1
    [ "$api_method" = POST ] || api_tries=${PROVISION_API_ATTEMPTS:-4}
    while :; do
        : > "$work/resp"
        if [ -n "$api_body" ]; then
            api_status=$(curl -sS -o "$work/resp" -w '%{http_code}' -X "$api_method" \
                --connect-timeout 10 --max-time 30 -H "@$work/$api_service.header" \
                -H 'Content-Type: application/json' --data-binary "@$api_body" \
                -- "$api_base$api_path" 2> "$work/curlerr") || api_status=000
        else
            api_status=$(curl -sS -o "$work/resp" -w '%{http_code}' -X "$api_method" \
                --connect-timeout 10 --max-time 30 -H "@$work/$api_service.header" \
                -- "$api_base$api_path" 2> "$work/curlerr") || api_status=000
        fi
        case $api_status in
        2??)
            api_what="$api_label $api_method ${api_path%%\?*}: HTTP $api_status"
            return 0 ;;
        000)
            api_what="$api_label $api_method ${api_path%%\?*}: no answer ($(one_line "$(cat "$work/curlerr")"))" ;;
        *)
            api_msg=$(jq -r '[.error.code, (.error.message // .message)] | map(select(. != null)) | join(": ")' \
                < "$work/resp" 2>/dev/null) || api_msg=
            api_what="$api_label $api_method ${api_path%%\?*}: HTTP $api_status${api_msg:+ ($(one_line "$api_msg"))}" ;;
        esac
        case $api_status in
        000 | 429 | 5??) [ "$api_try" -lt "$api_tries" ] || return 1 ;;
        *) return 1 ;;
        esac
        say "$api_what; retrying"
        pause $((api_try * 2))
        api_try=$((api_try + 1))
    done
}

# pause SECONDS: a sleep that a trapped signal interrupts at once.
pause() {
    sleep "$1" &
    sleep_pid=$!
    wait "$sleep_pid"
    sleep_pid=
}

# ---- cleanup ------------------------------------------------------------------

# cleanup_resources: deletes every server of this run of the job (by
# label) and every tailnet device of this run (by hostname). Idempotent: what
# is gone already counts as deleted. False, with the reason in
# $cleanup_what, if something may be left.
cleanup_resources() {
    cleanup_what=
    selector=$(printf '%s' "$label_selector" | sed -e 's/=/%3D/g' -e 's/,/%2C/g')
    if [ "$have_hcloud" = 1 ]; then
        if api hcloud GET "/v1/servers?label_selector=$selector&per_page=50"; then
            jq -r '.servers[] | "\(.id) \(.name)"' < "$work/resp" > "$work/servers" ||
                cleanup_what="the server list is not JSON"
            while read -r sid sname; do
                if api hcloud DELETE "/v1/servers/$sid" || [ "$api_status" = 404 ]; then
                    say "deleted server $sname ($sid)"
                    annotate notice "deleted server $sname ($sid)"
                else
                    cleanup_what="${cleanup_what:+$cleanup_what; }server $sname ($sid) is left: $api_what"
                fi
            done < "$work/servers"
        else
            cleanup_what="cannot list the servers labelled $label_selector: $api_what"
        fi
    elif [ -n "$(state_get create-started)" ]; then
        cleanup_what="HCLOUD_TOKEN is not set: cannot delete the servers labelled $label_selector"
    fi
    if [ "$have_tailscale" = 1 ]; then
        if api tailscale GET "/api/v2/tailnet/$tailnet/devices"; then
            jq -r --arg p "$name_prefix" '.devices[] | select(.hostname | startswith($p)) | "\(.id) \(.hostname)"' \
                < "$work/resp" > "$work/devices" ||
                cleanup_what="${cleanup_what:+$cleanup_what; }the device list is not JSON"
            while read -r did dname; do
                if api tailscale DELETE "/api/v2/device/$did" || [ "$api_status" = 404 ]; then
                    say "removed device $dname from the tailnet"
                else
                    cleanup_what="${cleanup_what:+$cleanup_what; }tailnet device $dname ($did) is left: $api_what"
                fi
            done < "$work/devices"
        else
            cleanup_what="${cleanup_what:+$cleanup_what; }cannot list the tailnet devices: $api_what"
        fi
    fi
    [ -z "$cleanup_what" ]
}

# ---- callbacks ----------------------------------------------------------------

# callback BODY_FILE DELIVERY_ID [SENDER OPTIONS...]: sends one callback with
# scripts/provision-callback; its response body is in $work/cb.json. Returns
# the sender's exit status (4: the job refused it with 409).
callback() {
    cb_body=$1 cb_delivery=$2
    shift 2
    : > "$work/cb.json"
    if [ -n "$cb_delivery" ]; then
        set -- --delivery-id "$cb_delivery" "$@"
    fi
    "$scripts_dir/../provision-callback" --response "$work/cb.json" "$@" "$cb_body" > /dev/null
}

# report_failed REASON [SENDER OPTIONS...]: the `failed` callback. One
# delivery id per run attempt and the same text from provision-vm and
# cleanup-vm, so that sending it twice is a harmless duplicate.
report_failed() {
    fr_reason=$1
    shift
    jq -n --arg job_id "$job_id" --arg error "$fr_reason" \
        '{job_id: $job_id, status: "failed", error: $error}' > "$work/failed.json"
    callback "$work/failed.json" "$delivery_prefix.failed" "$@"
    fr_rc=$?
    case $fr_rc in
    0) state_set failed-sent 1 ;;
    4) say "the job refused the failed callback (it is no longer this run's to fail)" ;;
    *) say "the failed callback was not delivered (provision-callback exit $fr_rc)" ;;
    esac
    return $fr_rc
}
