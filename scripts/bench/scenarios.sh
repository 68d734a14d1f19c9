# Sourced by scripts/bench.sh (after scripts/bench/common.sh): the gateway scenarios, in the order they run and print.
#   id|row name|path|header;header   (@POST2K: POST the 2 KB JSON body of run/bench/v1.json)
# Each row name matches a row of issue 8's targets table. The nginx proxy_pass baseline of a
# scenario sends the same request (method, path, headers, body) to the same upstream.
hs=$(bench_token hs256)
rs=$(bench_token rs256)
scenarios=(
    "plain|route only|/bench/plain|"
    "three|route only, three targets with health checks|/bench/three-targets|"
    "echo|/echo/ to the Python echo upstream|/echo/bench|"
    "apikey|API key|/bench/apikey|X-API-Key: demo-key-change-me"
    "limit-shm|API key + shared-memory limit|/bench/limit-local|X-API-Key: demo-key-change-me"
    "jwt-hs|JWT HS256 (token cache)|/bench/jwt|Authorization: Bearer $hs"
    "jwt-hs-limit|JWT HS256 (token cache) + shared-memory limit|/bench/jwt-limit|Authorization: Bearer $hs"
    "jwt-rs|JWT RS256, cached|/bench/jwt|Authorization: Bearer $rs"
    "limit-redis|Redis limit + API key|/bench/limit-redis|X-API-Key: demo-key-change-me"
    "transform|POST 2 KB, request + response transform|/bench/transform|@POST2K"
)
