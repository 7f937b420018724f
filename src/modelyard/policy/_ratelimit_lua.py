"""The Lua scripts behind :class:`modelyard.policy.ratelimit.RedisRateLimiter`.

Each counter is two keys: a hash ``<base>:h`` (field = bucket index → summed cost admitted in that
bucket, and field ``n`` → the total of live buckets) and a sorted set ``<base>:z`` (member = bucket
index, score = the newest admission in it, µs on the server clock). A bucket leaves the window when
its score is at or before ``now - window``. Times are whole microseconds: Lua numbers are doubles,
exact up to 2**53 µs (285 years).
"""

from __future__ import annotations

ACQUIRE_LUA = """
-- KEYS: per check, its hash then its sorted set.
-- ARGV: now_us ('' = server TIME), window_us, bucket_us, ttl_ms, then per check: limit, cost.
-- Returns {allowed 0|1, now_us, index of the violated check (1-based) or 0, wait_us}.
local now_us
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now_us = tonumber(ARGV[1])
end
local window_us = tonumber(ARGV[2])
local bucket_us = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])
local cut = now_us - window_us
local n = #KEYS / 2
local worst_i, worst_wait = 0, -1

for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local total = tonumber(redis.call('HGET', h, 'n') or 0)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', cut)
  if #expired > 0 then
    local amounts = redis.call('HMGET', h, unpack(expired))
    for j = 1, #amounts do
      total = total - (tonumber(amounts[j]) or 0)
    end
    if total < 0 then total = 0 end
    redis.call('HDEL', h, unpack(expired))
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cut)
    redis.call('HSET', h, 'n', total)
  end
  local limit, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if total + cost > limit then
    local wait = window_us
    if cost <= limit then
      -- Oldest buckets first: the request fits once enough of them have expired.
      local need = total + cost - limit
      local live = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed = 0
      for j = 1, #live, 2 do
        freed = freed + (tonumber(redis.call('HGET', h, live[j])) or 0)
        if freed >= need then
          wait = tonumber(live[j + 1]) + window_us - now_us
          break
        end
      end
    end
    if wait > worst_wait then
      worst_i, worst_wait = i, wait
    end
  end
end
if worst_i > 0 then
  return {0, now_us, worst_i, worst_wait}
end

-- floor(now_us / bucket_us), exact even where the division rounds up to the next integer.
local b = math.floor(now_us / bucket_us)
if b * bucket_us > now_us then
  b = b - 1
elseif (b + 1) * bucket_us <= now_us then
  b = b + 1
end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local cost = tonumber(ARGV[4 + 2 * i])
  redis.call('HINCRBY', h, b, cost)
  redis.call('HINCRBY', h, 'n', cost)
  redis.call('ZADD', z, 'GT', now_us, b)
  redis.call('PEXPIRE', h, ttl_ms)
  redis.call('PEXPIRE', z, ttl_ms)
end
return {1, now_us, 0, 0}
"""

ADJUST_LUA = """
-- KEYS: the counter's hash and sorted set. ARGV: bucket index, delta.
-- Changes the bucket only while it is still in the window; never below zero. Returns the change.
local h = KEYS[1]
local current = redis.call('HGET', h, ARGV[1])
if not current then
  return 0
end
current = tonumber(current)
local amount = current + tonumber(ARGV[2])
if amount < 0 then amount = 0 end
redis.call('HSET', h, ARGV[1], amount)
redis.call('HINCRBY', h, 'n', amount - current)
return amount - current
"""
