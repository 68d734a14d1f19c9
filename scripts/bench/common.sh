# Sourced by scripts/bench.sh and scripts/bench/instructions.sh: the pieces of a scenario both
# set up the same way (bodies, tokens, the static upstream's answers, routes of the bench config).
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# bench_bodies WORK: the ~2 KB JSON documents of the transform scenario: WORK/static/2k.json (the
# static upstream's answer to /bench/transform), WORK/v1.json (the v1 request body) and
# WORK/post2k.lua (a wrk script POSTing it).
bench_bodies() {
    mkdir -p "$1/static"
    python3 - "$1" <<'PY'
import json, sys
work = sys.argv[1]
items = [{"name": f"item-{i}", "cost_price": i * 1.5, "supplier": "acme", "qty": i} for i in range(18)]
doc = {"internal_id": "x-1", "debug": {"trace": "abc"}, "name": "widget", "items": items}
open(f"{work}/static/2k.json", "w").write(json.dumps(doc))
v1 = {"user_name": "alice", "email": "a@example.com", "phone": "+100", "street": "Main 1", "city": "Zurich",
      "notes": "n" * 1850}
open(f"{work}/v1.json", "w").write(json.dumps(v1))
body = json.dumps(v1).replace('"', '\\"')
open(f"{work}/post2k.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = "' + body + '"\n')
PY
}

# bench_static_locations WORK: the static upstream's locations (nginx), after bench_bodies WORK:
# the 2 KB document for the transform scenario, a small JSON body (a fast microservice) elsewhere.
bench_static_locations() {
    echo "location /bench/transform { default_type application/json; return 200 '$(cat "$1/static/2k.json")'; }"
    echo "location / { default_type application/json; return 200 '{\"id\":42,\"name\":\"widget\",\"price\":9.5,\"internal_cost\":3.1,\"tags\":[\"a\",\"b\"]}'; }"
}

# bench_token hs256|rs256: a demo token valid for a day.
bench_token() { python3 "$bench_dir/../mint_token.py" "$1" --ttl 86400; }

# bench_files DIR: what the bench config refers to relatively (demo keys and JWKS, plugins).
bench_files() {
    cp -r "$bench_dir"/../../config/demo-* "$1/" 2>/dev/null || true
    rm -rf "$1/plugins"; cp -r "$bench_dir/../../plugins" "$1/plugins"
}

# bench_config_part KEY | route NAME | route-for PATH: the JSON of a top-level KEY of
# scripts/bench/config.json.in, of its route NAME, or of the route that serves PATH (the longest
# prefix PATH starts with: the router's choice among the bench's prefix routes), so that another
# script configures a scenario exactly as the bench does.
bench_config_part() {
    python3 - "$bench_dir/config.json.in" "$@" <<'PY'
import json, re, sys
config = json.loads(re.sub(r"@[A-Z0-9_]+@", "0", open(sys.argv[1]).read()))
if sys.argv[2] == "route":
    found = [r for r in config["routes"] if r["name"] == sys.argv[3]]
    if not found: sys.exit(f"no route {sys.argv[3]} in {sys.argv[1]}")
    print(json.dumps(found[0]))
elif sys.argv[2] == "route-for":
    found = [r for r in config["routes"] if sys.argv[3].startswith(r["match"]["prefix"])]
    if not found: sys.exit(f"no route serves {sys.argv[3]} in {sys.argv[1]}")
    print(json.dumps(max(found, key=lambda r: len(r["match"]["prefix"]))))
else:
    print(json.dumps(config[sys.argv[2]]))
PY
}
