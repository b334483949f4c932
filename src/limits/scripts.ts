// The Lua scripts of shared limits, each run atomically by Redis (one round trip). Buckets use the
// sidecar's clock (an argument); lease expiries use the Redis server's (TIME), so that sidecars'
// clocks cannot stretch or shorten a lease. Tokens are stored as strings so fractions survive (Lua
// numbers would be truncated to integers on the way into Redis).
import { script } from "./redis.js";

/** take(key, now, rate, burst) → 1 when a token was taken: a token bucket, the arithmetic of ./bucket.ts. */
const TAKE = `
local function take(key, now, rate, burst)
  local s = redis.call('HMGET', key, 't', 'at')
  local tokens = tonumber(s[1]); local at = tonumber(s[2])
  if tokens == nil or at == nil then tokens = burst; at = now end
  if now > at then tokens = math.min(burst, tokens + (now - at) / 1000 * rate); at = now end
  local ok = 0
  if tokens >= 1 then tokens = tokens - 1; ok = 1 end
  redis.call('HSET', key, 't', tostring(tokens), 'at', tostring(at))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  return ok
end`;

/** room(key, cap) → now (Redis clock, ms) when the lease set has fewer than cap live leases, else nil. */
const ROOM = `
local function room(key, cap)
  local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= cap then return nil end
  return now
end`;

const ADD = `
local function add(key, now, ttl, id)
  redis.call('ZADD', key, now + ttl, id)
  redis.call('PEXPIRE', key, ttl + 1000)
end`;

/** KEYS[1] bucket; ARGV now (ms), tokens per second, burst. Returns 1 when a token was taken. */
export const RATE = script(`${TAKE}
return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))`);

/** KEYS[1] lease set; ARGV ttl (ms), cap, lease id. Returns 1 when the lease was added. */
export const ACQUIRE = script(`${ROOM}${ADD}
local now = room(KEYS[1], tonumber(ARGV[2]))
if now == nil then return 0 end
add(KEYS[1], now, tonumber(ARGV[1]), ARGV[3])
return 1`);

/**
 * Both at once: KEYS[1] bucket, KEYS[2] lease set; ARGV now (ms), tokens per second, burst, ttl (ms),
 * cap, lease id. A slot is looked for first (no token spent without one). Returns 1 (token and lease
 * taken), 0 (over the rate), -1 (no slot).
 */
export const ADMIT = script(`${TAKE}${ROOM}${ADD}
local now = room(KEYS[2], tonumber(ARGV[5]))
if now == nil then return -1 end
if take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])) == 0 then return 0 end
add(KEYS[2], now, tonumber(ARGV[4]), ARGV[6])
return 1`);

/** KEYS lease sets; ARGV ttl (ms), then one lease id per key: each lease's expiry becomes now + ttl. */
export const RENEW = script(`${ADD}
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i, k in ipairs(KEYS) do add(k, now, tonumber(ARGV[1]), ARGV[i + 1]) end
return #KEYS`);
