# Sourced by bench/sql/run and bench/sql/instructions: the PL/pgSQL
# reference they measure side by side with the extension.

# load_reference DB FILE: loads FILE into DB and prints the schema that
# holds its handle_callback(jsonb, text), or nothing when there is none;
# fails when FILE does not load.
load_reference() {
    psql -X -q -v ON_ERROR_STOP=1 -d "$1" -f "$2" >/dev/null || return 1
    psql -X -At -d "$1" -c "
        SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proname = 'handle_callback'
           AND p.proargtypes = '3802 25'::oidvector LIMIT 1"
}
