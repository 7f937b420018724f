"""The Lua script behind :class:`modelyard.policy.ratelimit.RedisRateLimiter`.

Each counter is two keys: a hash ``<base>:h`` (field = bucket index → summed cost admitted in that
bucket, and field ``n`` → the total of live buckets) and a sorted set ``<base>:z`` (member = bucket
index, score = the newest admission in it, µs on the server clock). A bucket leaves the window when
its score is at or before ``now - window``. Times are whole microseconds: Lua numbers are doubles,
exact up to 2**53 µs (285 years).

One script call carries a *batch*: first the TPM settlements (deltas) pending in the calling
process, then any number of requests, each checked and, if every one of its checks fits,
incremented, in order. Redis runs a script atomically, so a batch of N requests decides exactly as N
single calls in a row would, and no other client's request can come between a check and its
increment.
"""

from __future__ import annotations

BATCH_LUA = """
-- KEYS: per counter c (1-based), its hash KEYS[2c-1] and its sorted set KEYS[2c].
-- ARGV[1]: JSON [window_us, bucket_us, ttl_ms, settlements, requests] where a settlement is
--   [counter, bucket index, delta] and a request is [now_us (null = server TIME), checks] or, for a
--   lease, [now_us, checks, hold_us], a check being [counter, limit, cost] or, in a lease,
--   [counter, limit, cost, want]. (One JSON argument: far cheaper for the client to send than one
--   argument per number.)
-- Returns 4 numbers per request: allowed 0|1, now_us, index of the violated check (1-based) or 0,
-- wait_us; a lease adds one number per check: what it was granted (0 when refused).
local batch = cjson.decode(ARGV[1])
local window_us, bucket_us, ttl_ms = batch[1], batch[2], batch[3]

-- Settlements: change a bucket only while it is still in the window; never below zero.
for _, settlement in ipairs(batch[4]) do
  local h = KEYS[2 * settlement[1] - 1]
  local field = string.format('%d', settlement[2])
  local current = redis.call('HGET', h, field)
  if current then
    current = tonumber(current)
    local amount = current + settlement[3]
    if amount < 0 then amount = 0 end
    redis.call('HSET', h, field, amount)
    redis.call('HINCRBY', h, 'n', amount - current)
  end
end

local server_now = nil
local expired_to = {}  -- counter -> the cut it has been expired up to in this call
local out = {}

-- The counter's live total at cut, after dropping the buckets that left the window.
local function live_total(k, h, z, cut)
  local total = tonumber(redis.call('HGET', h, 'n') or 0)
  if expired_to[k] == cut then
    return total  -- expired up to this cut already; nothing older has been added since
  end
  expired_to[k] = cut
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
  return total
end

for _, request in ipairs(batch[5]) do
  local now_us = request[1]
  if now_us == cjson.null then
    if not server_now then
      local t = redis.call('TIME')
      server_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    now_us = server_now
  end
  local checks = request[2]
  local hold_us = request[3]
  local c = #checks
  local cut = now_us - window_us
  local worst_i, worst_wait = 0, -1
  local grants = {}

  for i = 1, c do
    local k, limit, cost = checks[i][1], checks[i][2], checks[i][3]
    local h, z = KEYS[2 * k - 1], KEYS[2 * k]
    local total = live_total(k, h, z, cut)
    -- A lease takes up to `want`, but never more than is left: at least `cost`, or nothing.
    local grant = cost
    local want = checks[i][4]
    if want and want > cost and limit - total > cost then
      grant = math.min(want, limit - total)
    end
    grants[i] = grant
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
    out[#out + 1] = 0
    out[#out + 1] = now_us
    out[#out + 1] = worst_i
    out[#out + 1] = worst_wait
    if hold_us then
      for i = 1, c do
        out[#out + 1] = 0
      end
    end
  else
    -- floor(now_us / bucket_us), exact even where the division rounds up to the next integer.
    local b = math.floor(now_us / bucket_us)
    if b * bucket_us > now_us then
      b = b - 1
    elseif (b + 1) * bucket_us <= now_us then
      b = b + 1
    end
    b = string.format('%d', b)  -- the field name a settlement sends (never 1.7e+15)
    -- A lease is used until hold_us from now: its admissions leave the window that much later.
    local newest = now_us + (hold_us or 0)
    for i = 1, c do
      local k, cost = checks[i][1], grants[i]
      local h, z = KEYS[2 * k - 1], KEYS[2 * k]
      if expired_to[k] and now_us <= expired_to[k] then
        expired_to[k] = nil  -- a clock read earlier than that cut (injected now): check afresh
      end
      redis.call('HINCRBY', h, b, cost)
      redis.call('HINCRBY', h, 'n', cost)
      redis.call('ZADD', z, 'GT', newest, b)
      redis.call('PEXPIRE', h, ttl_ms)  -- ttl_ms allows for a hold of up to 1 s
      redis.call('PEXPIRE', z, ttl_ms)
    end
    out[#out + 1] = 1
    out[#out + 1] = now_us
    out[#out + 1] = 0
    out[#out + 1] = 0
    if hold_us then
      for i = 1, c do
        out[#out + 1] = grants[i]
      end
    end
  end
end
return out
"""
