import PortcullisCore

/// The Lua script that makes one rate-limit decision atomically inside Redis. It mirrors the
/// pure algorithms of `PortcullisCore` (`GCRA`, `FixedWindow`, `SlidingWindow`) step for step;
/// the store contract tests run the same scenarios against both, so a divergence fails a test.
///
/// KEYS[1]: the counter key. ARGV: op (`a` acquire, `r` refund), algorithm (`t` token bucket,
/// `f` fixed window, `s` sliding window), now (µs), limit, window (µs), burst, cost.
/// Returns `{allowed (0/1), remaining, reset_after_us, retry_after_us}`.
///
/// Lua numbers are doubles: exact for every value below 2^53 (times in µs, and the sliding
/// window's count × window products for windows up to a day at a million requests).
/// Keys expire (PEXPIRE) one second after their state would be fresh again.
enum RedisRateLimitScript {
    static let source = #"""
local key = KEYS[1]
local op, algo = ARGV[1], ARGV[2]
local now, limit, W = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local burst, cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local function ttl(us) return math.floor(us / 1000) + 1000 end
if algo == 't' then
  local T = math.max(1, math.floor(W / limit))
  local cap = T * burst
  local tat = tonumber(redis.call('GET', key) or '0')
  if op == 'r' then
    if tat > now then
      local n = math.max(now, tat - T * cost)
      redis.call('SET', key, string.format('%.0f', n), 'PX', ttl(n - now))
    end
    return {0, 0, 0, 0}
  end
  local base = math.max(tat, now)
  local newTat = base + T * cost
  if newTat - now <= cap then
    redis.call('SET', key, string.format('%.0f', newTat), 'PX', ttl(newTat - now))
    return {1, math.floor((cap - (newTat - now)) / T), newTat - now, 0}
  end
  return {0, math.max(0, math.floor((cap - (base - now)) / T)), base - now, newTat - cap - now}
end
local id = math.floor(now / W)
local elapsed = now - id * W
local untilEnd = W - elapsed
if algo == 'f' then
  local st = redis.call('HMGET', key, 'w', 'c')
  local count = 0
  if tonumber(st[1]) == id then count = tonumber(st[2]) end
  if op == 'r' then
    if count > 0 then redis.call('HSET', key, 'c', string.format('%.0f', math.max(0, count - cost))) end
    return {0, 0, 0, 0}
  end
  if count + cost <= limit then
    count = count + cost
    redis.call('HSET', key, 'w', string.format('%.0f', id), 'c', string.format('%.0f', count))
    redis.call('PEXPIRE', key, ttl(untilEnd))
    return {1, limit - count, untilEnd, 0}
  end
  local reset = 0
  if count > 0 then reset = untilEnd end
  return {0, math.max(0, limit - count), reset, untilEnd}
end
-- sliding window
local st = redis.call('HMGET', key, 'w', 'p', 'c')
local sid = tonumber(st[1])
local prev, cur = 0, 0
if sid == id then prev, cur = tonumber(st[2]), tonumber(st[3])
elseif sid == id - 1 then prev = tonumber(st[3]) end
if op == 'r' then
  if sid == id then redis.call('HSET', key, 'c', string.format('%.0f', math.max(0, cur - cost))) end
  return {0, 0, 0, 0}
end
local function resetAfter(p, c)
  if c > 0 then return untilEnd + W end
  if p > 0 then return untilEnd end
  return 0
end
local wp = prev * untilEnd
if wp + (cur + cost) * W <= limit * W then
  cur = cur + cost
  local used = math.floor((wp + cur * W + W - 1) / W)
  redis.call('HSET', key, 'w', string.format('%.0f', id), 'p', string.format('%.0f', prev), 'c', string.format('%.0f', cur))
  redis.call('PEXPIRE', key, ttl(untilEnd + W))
  return {1, math.max(0, limit - used), resetAfter(prev, cur), 0}
end
local used = math.floor((wp + cur * W + W - 1) / W)
local retry
if cost > limit then
  retry = untilEnd + W
else
  local room = (limit - cur - cost) * W
  if room >= 0 and prev > 0 and W - math.floor(room / prev) < W then
    retry = math.max(1, W - math.floor(room / prev) - elapsed)
  elseif cur == 0 then
    retry = untilEnd
  else
    local e2 = math.max(0, W - math.floor((limit - cost) * W / cur))
    if e2 < W then retry = untilEnd + e2 else retry = untilEnd + W end
  end
end
return {0, math.max(0, limit - used), resetAfter(prev, cur), retry}
"""#

    static func algorithmCode(_ a: RateLimitAlgorithm) -> StaticString {
        switch a {
        case .tokenBucket: return "t"
        case .fixedWindow: return "f"
        case .slidingWindow: return "s"
        // Refused by the config reader: leases live in the shared-memory table only.
        case .concurrency: preconditionFailure("a concurrency limit is never sent to Redis")
        }
    }
}
