# Sourced by scripts/bench.sh: the scenarios beyond "plain". name|path|header;header
hs=$(python3 scripts/mint_token.py hs256 --ttl 86400)
rs=$(python3 scripts/mint_token.py rs256 --ttl 86400)
scenarios+=(
    "api key|/bench/apikey|X-API-Key: demo-key-change-me"
    "jwt HS256|/bench/jwt|Authorization: Bearer $hs"
    "jwt RS256 (cached)|/bench/jwt|Authorization: Bearer $rs"
    "limit shm|/bench/limit-local|X-API-Key: demo-key-change-me"
    "limit redis|/bench/limit-redis|X-API-Key: demo-key-change-me"
    "transform 2KB|/bench/transform|@POST2K"
)
