# Sourced by the benchmark scripts: `bench_store PATH` creates a store in the
# Amazon Q CLI's schema holding a login whose token is valid for an hour.
bench_store() {
  local expires
  expires=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  sqlite3 "$1" <<SQL
CREATE TABLE migrations (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, migration_time INTEGER NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE conversations (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO auth_kv VALUES ('codewhisperer:odic:token', '{"access_token":"aoa-bench","expires_at":"$expires","refresh_token":"aor-bench","region":"us-east-1","start_url":"https://view.awsapps.com/start","oauth_flow":"DeviceCode","scopes":["codewhisperer:completions"]}');
SQL
}
